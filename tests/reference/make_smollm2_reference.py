#!/usr/bin/env python3
"""Golden logits of SmolLM2-135M-Instruct (Q4_1 GGUF) from Hugging Face transformers.

Exact command that made tests/fixtures/smollm2_reference.json (from the repo root):

    python3 tests/reference/make_smollm2_reference.py \
        --model-dir models/smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf \
        --alpaca ../shared/data/alpaca_eval.json \
        --out tests/fixtures/smollm2_reference.json --numpy-crosscheck

Versions used: Python 3.11.7, torch 2.15.0+cu132 (run on CPU), transformers 5.23.0,
gguf 0.19.0, accelerate 1.15.0 (transformers needs it to load GGUF), numpy 2.4.6.

How transformers reads the file: it dequantizes every tensor with gguf-py
(gguf.dequantize; Q4_1 blocks and the Q8_0 token embedding become float32), so it runs
exactly the weights our engine runs, in float32. For the "llama" architecture it
un-permutes the rows of attn_q / attn_k (LlamaTensorProcessor._reverse_permute_weights)
so that Hugging Face's rotate_half RoPE (pairs (x[i], x[i + 32]) per head) applies;
our engine keeps the GGUF row order and rotates adjacent pairs (x[2i], x[2i + 1]).
Both compute the same function, which is what the C++ test checks. With
--numpy-crosscheck this script also runs its own float64 NumPy forward straight on the
GGUF tensors with adjacent-pair RoPE (no permutation) and fails unless it agrees with
transformers; that checks the equivalence before any C++ exists.

Model settings transformers takes from the GGUF metadata (printed when run, stored in
the fixture): rope_theta 100000, rms_norm_eps 1e-5 (9.99999974738e-06 as float32),
tie_word_embeddings true (there is no output.weight), head_dim 64, 9 heads, 3 KV heads.

Inputs of record are token ids. The GGUF says tokenizer.ggml.add_bos_token = false and
transformers' GGUF tokenizer adds no BOS either, so no BOS is prepended: plain prompts
are the tokenizer's ids of the text; chat prompts are the ids of the exact output of
the GGUF chat template (tokenizer.apply_chat_template with add_generation_prompt), which
inserts SmolLM2's default system prompt ("You are a helpful AI assistant named SmolLM,
trained by Hugging Face") when the conversation has no system message.

Greedy continuations: model.generate(do_sample=False, max_new_tokens=64) with
eos_token_id=None, so every continuation has exactly 64 ids; where transformers would
have stopped (the first EOS id 2, <|im_end|>) is recorded as natural_stop_index.
"""

import argparse
import hashlib
import json
import sys

import numpy as np

EXPECTED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PLAIN_PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
]
NUM_CHAT_PROMPTS = 4
MIN_TOKENS, MAX_TOKENS = 10, 60
SAMPLE_SEED = 20240611
NUM_SAMPLED_IDS = 256
TOP_K = 10
NEW_TOKENS = 64
DECIMALS = 5


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_prompts(tokenizer, alpaca_path):
    """Plain texts, then the first AlpacaEval instructions (file order) that fit."""
    prompts = []
    for text in PLAIN_PROMPTS:
        ids = tokenizer(text, add_special_tokens=True).input_ids
        prompts.append({"kind": "plain", "text": text, "input_ids": ids})

    with open(alpaca_path, encoding="utf-8") as f:
        alpaca = json.load(f)
    for index, row in enumerate(alpaca):
        if sum(p["kind"] == "chat" for p in prompts) == NUM_CHAT_PROMPTS:
            break
        messages = [{"role": "user", "content": row["instruction"]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        templated = tokenizer.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=True)
        if hasattr(templated, "keys"):
            templated = templated["input_ids"]
        if list(templated) != ids:
            sys.exit(f"apply_chat_template ids differ from tokenizing its text: {row}")
        if MIN_TOKENS <= len(ids) <= MAX_TOKENS:
            prompts.append({"kind": "chat", "alpaca_index": index,
                            "instruction": row["instruction"], "text": text,
                            "input_ids": ids})

    for p in prompts:
        if not MIN_TOKENS <= len(p["input_ids"]) <= MAX_TOKENS:
            sys.exit(f"prompt has {len(p['input_ids'])} tokens, outside "
                     f"[{MIN_TOKENS}, {MAX_TOKENS}]: {p['text']!r}")
    return prompts


def logsumexp_rows(logits):
    peak = logits.max(axis=1, keepdims=True)
    return (peak + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True)))[:, 0]


def rounded(values):
    return [round(float(v), DECIMALS) for v in values]


def record_positions(logits, sampled_ids):
    """Per position: top-k ids and logits, logsumexp, logits at sampled ids."""
    rows64 = logits.astype(np.float64)
    lse = logsumexp_rows(rows64)
    positions = []
    for p, row in enumerate(logits):
        top = np.argsort(-row, kind="stable")[:TOP_K]
        positions.append({
            "top_ids": [int(i) for i in top],
            "top_logits": rounded(row[top]),
            "logsumexp": round(float(lse[p]), DECIMALS),
            "sampled_logits": rounded(row[sampled_ids]),
        })
    return positions


def greedy_continuation(model, input_ids, torch):
    # eos_token_id=None must be a keyword: set on a GenerationConfig object it is
    # refilled from the model's defaults (transformers 5.23) and generation stops at EOS.
    ids = torch.tensor([input_ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=2,
                         return_dict_in_generate=True, output_logits=True)
    new_ids = [int(t) for t in out.sequences[0, len(input_ids):]]
    if len(new_ids) != NEW_TOKENS:
        sys.exit(f"generate produced {len(new_ids)} ids, expected {NEW_TOKENS}")
    margins = []
    for step_logits in out.logits:
        top2 = torch.topk(step_logits[0].float(), 2).values
        margins.append(float(top2[0] - top2[1]))
    return new_ids, margins


def numpy_forward(gguf_path, prompts_ids):
    """Float64 forward on the raw GGUF tensors, adjacent-pair RoPE, no permutation."""
    import gguf
    reader = gguf.GGUFReader(gguf_path)
    meta = {k: f.contents() for k, f in reader.fields.items()
            if k.startswith("llama.")}
    n_layers = meta["llama.block_count"]
    n_heads = meta["llama.attention.head_count"]
    n_kv = meta["llama.attention.head_count_kv"]
    dim = meta["llama.embedding_length"]
    theta = meta["llama.rope.freq_base"]
    eps = meta["llama.attention.layer_norm_rms_epsilon"]
    hs = dim // n_heads
    t = {}
    for tensor in reader.tensors:
        shape = tuple(int(s) for s in reversed(tensor.shape))
        t[tensor.name] = gguf.dequantize(tensor.data, tensor.tensor_type) \
            .reshape(shape).astype(np.float64)

    def rmsnorm(x, w):
        return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)

    def rope(x, n):  # x: [T, n*hs]
        T = x.shape[0]
        pairs = x.reshape(T, n, hs // 2, 2)
        angle = np.arange(T)[:, None] * theta ** (-(2.0 * np.arange(hs // 2)) / hs)
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        a, b = pairs[..., 0], pairs[..., 1]
        return np.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(x.shape)

    results = []
    for ids in prompts_ids:
        T = len(ids)
        x = t["token_embd.weight"][ids]
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for layer in range(n_layers):
            pre = f"blk.{layer}."
            h = rmsnorm(x, t[pre + "attn_norm.weight"])
            q = rope(h @ t[pre + "attn_q.weight"].T, n_heads).reshape(T, n_heads, hs)
            k = rope(h @ t[pre + "attn_k.weight"].T, n_kv).reshape(T, n_kv, hs)
            v = (h @ t[pre + "attn_v.weight"].T).reshape(T, n_kv, hs)
            out = np.empty((T, n_heads, hs))
            for head in range(n_heads):
                kv = head // (n_heads // n_kv)
                s = q[:, head] @ k[:, kv].T / np.sqrt(hs) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                out[:, head] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kv]
            x = x + out.reshape(T, dim) @ t[pre + "attn_output.weight"].T
            h = rmsnorm(x, t[pre + "ffn_norm.weight"])
            g = h @ t[pre + "ffn_gate.weight"].T
            u = h @ t[pre + "ffn_up.weight"].T
            x = x + (g / (1 + np.exp(-g)) * u) @ t[pre + "ffn_down.weight"].T
        x = rmsnorm(x, t["output_norm.weight"])
        classifier = t.get("output.weight", t["token_embd.weight"])
        results.append(x @ classifier.T)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--gguf-file", required=True)
    parser.add_argument("--alpaca", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--numpy-crosscheck", action="store_true")
    args = parser.parse_args()

    import gguf
    import torch
    import transformers
    from importlib.metadata import version
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = f"{args.model_dir}/{args.gguf_file}"
    sha = sha256_of(gguf_path)
    if sha != EXPECTED_SHA256:
        sys.exit(f"{gguf_path}: sha256 {sha}, expected {EXPECTED_SHA256}")

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=args.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, gguf_file=args.gguf_file, dtype=torch.float32,
        attn_implementation="eager")
    model.eval()
    cfg = model.config
    print(cfg)
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if not tied or model.dtype != torch.float32:
        sys.exit(f"unexpected model: tied={tied} dtype={model.dtype}")

    prompts = build_prompts(tokenizer, args.alpaca)
    vocab = cfg.vocab_size
    sampled_ids = np.sort(np.random.default_rng(SAMPLE_SEED)
                          .choice(vocab, NUM_SAMPLED_IDS, replace=False))

    max_abs_logit = 0.0
    all_logits = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p["input_ids"]])
            logits = model(ids).logits[0].float().numpy()
            all_logits.append(logits)
            p["max_abs_logit"] = round(float(np.abs(logits).max()), DECIMALS)
            max_abs_logit = max(max_abs_logit, p["max_abs_logit"])
            p["positions"] = record_positions(logits, sampled_ids)
            p["greedy_ids"], p["greedy_margins"] = greedy_continuation(
                model, p["input_ids"], torch)
            p["greedy_margins"] = rounded(p["greedy_margins"])
            eos = [i for i, t in enumerate(p["greedy_ids"]) if t == cfg.eos_token_id]
            p["natural_stop_index"] = eos[0] if eos else None
            p["greedy_text"] = tokenizer.decode(p["greedy_ids"])
            print(f"[{p['kind']}] {len(p['input_ids'])} tokens, max|logit| "
                  f"{p['max_abs_logit']:.3f}, natural stop {p['natural_stop_index']}, "
                  f"min greedy margin {min(p['greedy_margins']):.4f}: "
                  f"{p['greedy_text'][:60]!r}")

    crosscheck = None
    if args.numpy_crosscheck:
        ours = numpy_forward(gguf_path, [p["input_ids"] for p in prompts])
        worst = max(float(np.abs(a - b).max()) for a, b in zip(ours, all_logits))
        top1_agree = all((a.argmax(1) == b.argmax(1)).all() for a, b in zip(ours, all_logits))
        print(f"numpy float64 adjacent-pair forward vs transformers: max |diff| {worst:.3e}, "
              f"top-1 agrees everywhere: {top1_agree}")
        if worst > 1e-2 or not top1_agree:
            sys.exit("numpy cross-check failed")
        crosscheck = {"max_abs_diff": worst, "top1_agrees": bool(top1_agree),
                      "what": "float64 NumPy forward on the GGUF tensors with adjacent-pair "
                              "RoPE (no Q/K permutation) vs transformers float32, all positions"}

    fixture = {
        "description": "SmolLM2-135M-Instruct Q4_1 GGUF logits from Hugging Face transformers "
                       "(float32, dequantized by gguf-py), tests/reference/make_smollm2_reference.py",
        "command": "python3 tests/reference/make_smollm2_reference.py --model-dir models/smollm2 "
                   "--gguf-file SmolLM2-135M-Instruct.Q4_1.gguf --alpaca "
                   "../shared/data/alpaca_eval.json --out tests/fixtures/smollm2_reference.json "
                   "--numpy-crosscheck",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "gguf": version("gguf"),
                     "numpy": np.__version__},
        "gguf_file": f"models/smollm2/{args.gguf_file}",
        "gguf_sha256": sha,
        "config": {"vocab_size": vocab, "hidden_size": cfg.hidden_size,
                   "num_layers": cfg.num_hidden_layers, "num_heads": cfg.num_attention_heads,
                   "num_kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
                   "intermediate_size": cfg.intermediate_size,
                   "rope_theta": cfg.rope_parameters["rope_theta"],
                   "rms_norm_eps": cfg.rms_norm_eps, "tie_word_embeddings": tied,
                   "attn_implementation": "eager", "dtype": "float32"},
        "bos": "no BOS prepended: GGUF tokenizer.ggml.add_bos_token is false and "
               "transformers' GGUF tokenizer adds none; input_ids are complete",
        "chat_template_note": "chat prompts are the GGUF chat template's exact output "
                              "(default SmolLM system prompt inserted) for one user turn "
                              "with add_generation_prompt",
        "greedy_note": f"generate(do_sample=False, max_new_tokens={NEW_TOKENS}) with "
                       "eos_token_id=None: always 64 ids; natural_stop_index is the first EOS "
                       "(id 2) in them, i.e. where default generate would have stopped (null: "
                       "none); greedy_margins[i] is top-1 minus top-2 logit at step i",
        "positions_note": "positions[p] describes the logits row after input_ids[0..p]: "
                          f"top-{TOP_K} ids and logits (descending), logsumexp of the full row, "
                          "logits at sampled_ids",
        "rounding": f"logits rounded to {DECIMALS} decimals",
        "sampled_ids_seed": SAMPLE_SEED,
        "sampled_ids": [int(i) for i in sampled_ids],
        "max_abs_logit": max_abs_logit,
        "numpy_crosscheck": crosscheck,
        "prompts": prompts,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
