#!/usr/bin/env python3
"""Mistral's SentencePiece tokenizers against `sentencepiece`: the reference ids.

Exact command that made tests/fixtures/mistral_tokenizer.json (from the repo root, after
scripts/setup.sh, which takes the files from the PyPI wheel mistral-common==1.13.1):

    python3 tests/reference/make_mistral_tokenizer_fixtures.py

Versions used: Python 3.11.7, sentencepiece 0.2.3, transformers 5.25.0.

Two tokenizers Mistral ships with its instruct models: tokenizer.model.v1 (Mistral-7B v0.1 and
v0.2, 32000 pieces) and mistral_instruct_tokenizer_240323.model.v3 (v0.3, 32768 pieces with
[INST], [/INST], tool-call and other control pieces). For every string of
tests/fixtures/tokenizer_fixtures.json: sentencepiece's ids (control pieces are text there, as
the engine's parse_special=false), and transformers' ids for the same tokenizer.model converted
to a tokenizer.json (LlamaTokenizer, legacy=True, add_special_tokens=False): the two must agree
on the strings the fixture records as "transformers_agrees".
"""

import json
import os
import shutil
import tempfile

import sentencepiece as spm
from transformers import LlamaTokenizer

FILES = {"v1": "models/mistral-tokenizer/tokenizer.model.v1",
         "v3": "models/mistral-tokenizer/mistral_instruct_tokenizer_240323.model.v3"}


def main():
    strings = json.load(open("tests/fixtures/tokenizer_fixtures.json"))["strings"]
    out = {"command": "python3 tests/reference/make_mistral_tokenizer_fixtures.py", "tokenizers": {}}
    for name, path in FILES.items():
        sp = spm.SentencePieceProcessor(model_file=path)
        ids = [sp.encode(s) for s in strings]
        work = tempfile.mkdtemp()
        shutil.copy(path, os.path.join(work, "tokenizer.model"))
        hf = LlamaTokenizer.from_pretrained(work, legacy=True)
        agrees = [hf(s, add_special_tokens=False).input_ids == i for s, i in zip(strings, ids)]
        shutil.rmtree(work)
        out["tokenizers"][name] = {"file": path, "vocab_size": sp.get_piece_size(), "ids": ids,
                                   "decoded": [sp.decode(i) for i in ids],
                                   "transformers_agrees": sum(agrees)}
        print(f"{name}: {sp.get_piece_size()} pieces, transformers agrees on {sum(agrees)} of {len(strings)}")
    with open("tests/fixtures/mistral_tokenizer.json", "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
