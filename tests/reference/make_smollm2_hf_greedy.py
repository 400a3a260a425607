#!/usr/bin/env python3
"""Greedy answers of SmolLM2-135M-Instruct from transformers, on its Hugging Face-layout checkpoint.

Exact commands that made tests/fixtures/smollm2_hf_greedy.json (from the repo root, after
scripts/setup.sh):

    build/bin/medusa make-model --from models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --dtype f32 \
        --out /tmp/smollm2_hf
    cp tests/fixtures/hf/smollm2_tokenizer/* /tmp/smollm2_hf/
    python3 tests/reference/make_smollm2_hf_greedy.py --checkpoint /tmp/smollm2_hf \
        --gguf models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --alpaca ../shared/data/alpaca_eval.json \
        --out tests/fixtures/smollm2_hf_greedy.json

Versions used: Python 3.11.7, torch 2.15.0 (CPU), transformers 5.25.0, gguf 0.19.0,
accelerate 1.15.0.

The checkpoint is the engine's own export of the GGUF (Q4_1 dequantized to float32, Q/K rows
back in rotate-half order), so before anything is recorded transformers checks it
independently: LlamaForCausalLM on the directory must give the same logits as transformers on
the GGUF itself (its own dequantization and un-permutation) on every position of a prompt.
The C++ test (tests/integration/hf_checkpoint_test.cc) makes the same directory at run time.

For the first 24 instructions of AlpacaEval: the chat prompt (transformers'
apply_chat_template with add_generation_prompt, SmolLM2's default system message), its ids,
and model.generate(do_sample=False, max_new_tokens=32, eos_token_id=None) in float32, with the
margin between the best and second-best logit at every step (a near-tie explains a first
divergence, if any).
"""

import argparse
import json
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = 24
NEW_TOKENS = 32


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--alpaca", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)

    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, torch_dtype=torch.float32).eval()
    gguf = AutoModelForCausalLM.from_pretrained(os.path.dirname(args.gguf), gguf_file=os.path.basename(args.gguf),
                                                torch_dtype=torch.float32).eval()
    probe = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(probe).logits - gguf(probe).logits).abs().max().item()
    print(f"checkpoint vs GGUF in transformers: max |logit difference| {diff:.3g}")
    assert diff < 1e-3, diff
    del gguf

    alpaca = json.load(open(args.alpaca))
    prompts = []
    for item in alpaca[:PROMPTS]:
        instruction = item["instruction"] if isinstance(item, dict) else item
        messages = [{"role": "user", "content": instruction}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
                                 output_scores=True, return_dict_in_generate=True)
        greedy = out.sequences[0, len(ids):].tolist()
        margins = []
        for step in out.scores:
            top = torch.topk(step[0].float(), 2).values
            margins.append(round((top[0] - top[1]).item(), 5))
        prompts.append({"instruction": instruction, "text": text, "input_ids": ids, "greedy_ids": greedy,
                        "greedy_margins": margins, "greedy_text": tokenizer.decode(greedy)})
        print(f"{len(prompts):2d}: {len(ids)} prompt ids, smallest margin {min(margins):.4f}")
    fixture = {"description": __doc__.strip().splitlines()[0], "logit_check_max_abs_diff": diff,
               "new_tokens": NEW_TOKENS, "prompts": prompts}
    with open(args.out, "w") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
