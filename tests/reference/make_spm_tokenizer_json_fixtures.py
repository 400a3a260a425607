#!/usr/bin/env python3
"""SentencePiece-style tokenizer.json fixtures (Llama-2, Vicuna, Mistral), checked with transformers.

Exact command that made tests/fixtures/hf/llama2_tokenizer_json.tar.xz and
tests/fixtures/hf/spm_tokenizer_json.json (from the repo root, after scripts/setup.sh):

    python3 tests/reference/make_spm_tokenizer_json_fixtures.py --out tests/fixtures/hf

Versions used: Python 3.11.7, transformers 5.25.0, tokenizers 0.23.3, sentencepiece 0.2.3.

transformers converts Llama-2's tokenizer.model (models/llama2-tokenizer, the tokenizer of
Llama-2 and Vicuna) into a tokenizer.json: BPE with byte fallback and merges by rank. The
archive holds that file and its tokenizer_config.json. Checkpoints on the hub write the "▁"
prefix in one of three ways, each a variant here (the same vocabulary and merges):
- "prepend_normalizer": Llama-2's and Vicuna's files: normalizer Prepend("▁") then
  Replace(" ", "▁"), no pre-tokenizer;
- "metaspace_always": what transformers writes today with legacy=True: the Metaspace
  pre-tokenizer, prepend_scheme "always";
- "metaspace_first": legacy=False (Mistral's newer files): prepend_scheme "first", so text
  after a special token gets no "▁".
For each variant the JSON holds the ids transformers' tokenizer (PreTrainedTokenizerFast on
that tokenizer.json, add_special_tokens=False) gives every string of
tests/fixtures/tokenizer_fixtures.json (260 strings: unicode, digits, code, whitespace runs,
special-token literals). For "prepend_normalizer" the script also reports how many agree with
sentencepiece itself.
"""

import argparse
import copy
import io
import json
import os
import shutil
import tarfile
import tempfile

import sentencepiece
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

LLAMA2 = "models/llama2-tokenizer/tokenizer.model"
SPACE = "\u2581"
PREPEND_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": SPACE},
        {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
    ],
}


def variants(base):
    """The three ways hub files write the prefix, over one vocabulary."""
    out = {}
    v = copy.deepcopy(base)
    v["normalizer"] = PREPEND_NORMALIZER
    v["pre_tokenizer"] = None
    out["prepend_normalizer"] = v
    for scheme in ("always", "first"):
        v = copy.deepcopy(base)
        v["normalizer"] = None
        v["pre_tokenizer"] = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": scheme, "split": False}
        out["metaspace_" + scheme] = v
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokenizer-fixtures", default="tests/fixtures/tokenizer_fixtures.json")
    args = parser.parse_args()
    strings = json.load(open(args.tokenizer_fixtures))["strings"]

    work = tempfile.mkdtemp()
    src = os.path.join(work, "src")
    os.makedirs(src)
    shutil.copy(LLAMA2, src)
    converted = os.path.join(work, "converted")
    LlamaTokenizer.from_pretrained(src, legacy=True).save_pretrained(converted)
    base = json.load(open(os.path.join(converted, "tokenizer.json")))
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
              "tokenizer_class": "LlamaTokenizer"}

    sp = sentencepiece.SentencePieceProcessor(model_file=LLAMA2)
    fixture = {"command": "python3 tests/reference/make_spm_tokenizer_json_fixtures.py --out tests/fixtures/hf",
               "archive": "llama2_tokenizer_json.tar.xz", "variants": {}}
    for name, tok in variants(base).items():
        d = os.path.join(work, name)
        os.makedirs(d)
        json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)
        json.dump(config, open(os.path.join(d, "tokenizer_config.json"), "w"))
        hf = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))
        ids = [hf(s, add_special_tokens=False).input_ids for s in strings]
        fixture["variants"][name] = {"normalizer": tok["normalizer"], "pre_tokenizer": tok["pre_tokenizer"],
                                     "ids": ids}
        if name == "prepend_normalizer":
            same = sum(sp.encode(s) == i for s, i in zip(strings, ids))
            print(f"{name}: {same} of {len(strings)} strings give sentencepiece's ids")
        print(f"{name}: {len(ids)} strings, {sum(len(i) for i in ids)} ids")

    # The archive: the Llama-2 hub layout (prepend_normalizer), compressed (3.6 MB of JSON).
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for file in ("tokenizer.json", "tokenizer_config.json"):
            tar.add(os.path.join(work, "prepend_normalizer", file), arcname=file)
    open(os.path.join(args.out, fixture["archive"]), "wb").write(buffer.getvalue())
    with open(os.path.join(args.out, "spm_tokenizer_json.json"), "w") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
