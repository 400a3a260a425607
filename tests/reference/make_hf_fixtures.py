#!/usr/bin/env python3
"""Hugging Face checkpoint fixtures for the engine's loader, checked with transformers.

Exact command that made tests/fixtures/hf/ (from the repo root, after scripts/setup.sh):

    python3 tests/reference/make_hf_fixtures.py --out tests/fixtures/hf

Versions used: Python 3.11.7, torch 2.15.0+cu132 (run on CPU), transformers 5.25.0,
safetensors 0.8.0, numpy 2.4.6.

It writes:
- stories260k/: stories260K (llama2.c) in the Hugging Face layout, F32, model.safetensors,
  Q/K rows moved from llama2.c's adjacent-pair RoPE order to transformers' rotate-half order
  (the inverse of what the engine's loader undoes), with tok512.model as tokenizer.model.
  transformers' LlamaForCausalLM on it must reproduce the float64 llama2.c forward
  (tests/fixtures/stories260k_reference.json's logits) before anything is written: that checks
  the conversion independently of the engine.
- stories260k_bf16_sharded/: the same weights in BF16, cut into shards listed by
  model.safetensors.index.json (as save_pretrained writes large models).
- tiny_llama3/: a random LlamaForCausalLM made by transformers (seed 0): grouped-query
  attention (4 heads, 2 KV heads), an untied lm_head, rope_theta 500000 and Llama 3's
  rope_scaling, saved by save_pretrained in shards.
- reference.json: for each model above, token ids and transformers' float64 logits at every
  position of one causal pass.
- smollm2_tokenizer/: SmolLM2's tokenizer as transformers saves it from the GGUF
  (tokenizer.json written compactly, tokenizer_config.json, chat_template.jinja); before
  writing, `tokenizers` encodes tests/fixtures/tokenizer_fixtures.json's strings with it to
  exactly the ids recorded there for SmolLM2.
- llama3_split.json: the ids `tokenizers` gives those strings with SmolLM2's vocabulary behind
  Llama 3's pre-tokenizer (its Split pattern, then ByteLevel without a regex), and that
  pre-tokenizer: the reference for the engine's hand-written Llama 3 split.
"""

LLAMA3_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split",
         "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(__file__))
from llama2c_numpy import read_checkpoint  # noqa: E402


def rotate_half_rows(w, n_heads, head_dim):
    """Adjacent-pair row order (2i, 2i+1) to rotate-half order (i, i + head_dim/2), per head."""
    w = w.reshape(n_heads, head_dim // 2, 2, -1)
    return w.transpose(0, 2, 1, 3).reshape(n_heads * head_dim, -1)


def stories_tensors(checkpoint):
    config, w = read_checkpoint(checkpoint)
    head_dim = config["dim"] // config["n_heads"]
    t = {"model.embed_tokens.weight": w["token_embedding"], "model.norm.weight": w["rms_final"]}
    for i in range(config["n_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = w["rms_att"][i]
        t[p + "self_attn.q_proj.weight"] = rotate_half_rows(w["wq"][i], config["n_heads"], head_dim)
        t[p + "self_attn.k_proj.weight"] = rotate_half_rows(w["wk"][i], config["n_kv_heads"], head_dim)
        t[p + "self_attn.v_proj.weight"] = w["wv"][i]
        t[p + "self_attn.o_proj.weight"] = w["wo"][i]
        t[p + "post_attention_layernorm.weight"] = w["rms_ffn"][i]
        t[p + "mlp.gate_proj.weight"] = w["w1"][i]
        t[p + "mlp.down_proj.weight"] = w["w2"][i]
        t[p + "mlp.up_proj.weight"] = w["w3"][i]
    hf_config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config["dim"],
        "intermediate_size": config["hidden_dim"],
        "num_hidden_layers": config["n_layers"],
        "num_attention_heads": config["n_heads"],
        "num_key_value_heads": config["n_kv_heads"],
        "vocab_size": config["vocab_size"],
        "max_position_embeddings": config["seq_len"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    return hf_config, {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in t.items()}


def write_checkpoint(out_dir, hf_config, tensors, dtype, shards):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dict(hf_config, torch_dtype=dtype), f, indent=2)
    names = sorted(tensors)
    if dtype == "bfloat16":
        # BF16 bits: float32 rounded to nearest even, then the top 16 bits.
        def convert(a):
            bits = a.view(np.uint32).astype(np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            return rounded
        arrays = {k: convert(tensors[k]) for k in names}
    else:
        arrays = {k: tensors[k] for k in names}
    if shards == 1:
        if dtype == "bfloat16":
            sys.exit("bf16 needs torch's writer: use shards > 1 path")
        save_file(arrays, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
        return
    # Sharded: torch tensors so safetensors writes BF16 with its own dtype name.
    from safetensors.torch import save_file as save_torch
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for s, group in enumerate(groups):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        chunk = {}
        for k in group:
            if dtype == "bfloat16":
                chunk[k] = torch.from_numpy(arrays[k].view(np.int16).copy()).view(torch.bfloat16)
            else:
                chunk[k] = torch.from_numpy(arrays[k])
            weight_map[k] = file
        save_torch(chunk, os.path.join(out_dir, file), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def transformers_logits(model_dir, ids):
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return out.logits[0].numpy()


def write_smollm2_tokenizer(out_dir, gguf_path, fixtures_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    tok.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "tokenizer.json")) as f:
        compact = json.load(f)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(compact, f, ensure_ascii=False, separators=(",", ":"))
    with open(fixtures_path) as f:
        fixtures = json.load(f)
    fast = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    expected = fixtures["tokenizers"]["smollm2"]
    for key, split_special in (("ids", True), ("ids_parse_special", False)):
        fast.encode_special_tokens = split_special
        for text, ids in zip(fixtures["strings"], expected[key]):
            got = fast.encode(text, add_special_tokens=False).ids
            if got != ids:
                sys.exit(f"tokenizer.json encodes {text!r} to {got}, the fixture's {key} says {ids}")
    print(f"smollm2_tokenizer: {len(fixtures['strings'])} strings encode as the fixture says, special tokens "
          "parsed and not")
    compact["pre_tokenizer"] = LLAMA3_PRE_TOKENIZER
    llama3 = Tokenizer.from_str(json.dumps(compact))
    llama3.encode_special_tokens = True
    ids = [llama3.encode(text, add_special_tokens=False).ids for text in fixtures["strings"]]
    with open(os.path.join(os.path.dirname(out_dir), "llama3_split.json"), "w") as f:
        json.dump({"pre_tokenizer": LLAMA3_PRE_TOKENIZER, "ids": ids}, f)
    differ = sum(a != b for a, b in zip(ids, expected["ids"]))
    print(f"llama3_split: {differ} of {len(ids)} strings split differently from GPT-2's pattern")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--stories", default="models/stories260K/stories260K.bin")
    parser.add_argument("--tokenizer", default="models/stories260K/tok512.model")
    parser.add_argument("--stories-reference", default="tests/fixtures/stories260k_reference.json")
    parser.add_argument("--smollm2", default="models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--tokenizer-fixtures", default="tests/fixtures/tokenizer_fixtures.json")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    reference = {}

    hf_config, tensors = stories_tensors(args.stories)
    stories_dir = os.path.join(args.out, "stories260k")
    write_checkpoint(stories_dir, hf_config, tensors, "float32", 1)
    shutil.copy(args.tokenizer, os.path.join(stories_dir, "tokenizer.model"))
    with open(args.stories_reference) as f:
        golden = json.load(f)
    ids = [int(i) for i in golden["input_ids"][:16]]  # BOS, then the greedy tokens it fed back
    logits = transformers_logits(stories_dir, ids)
    golden_rows = np.array(golden["logits"][:16])
    err = np.abs(logits[: len(golden_rows)] - golden_rows).max()
    # transformers computes RoPE's inverse frequencies in float32 even for a float64 model: a
    # few 1e-6 of difference, nothing like a misplaced row (O(1)).
    if err > 2e-5:
        sys.exit(f"transformers on the converted stories260K differs from the llama2.c forward by {err}")
    print(f"stories260k: transformers vs the llama2.c float64 forward, largest difference {err:.2e}")
    reference["stories260k"] = {"ids": ids, "logits": logits.tolist()}

    write_checkpoint(os.path.join(args.out, "stories260k_bf16_sharded"), hf_config, tensors, "bfloat16", 3)

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, max_position_embeddings=2048, rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # larger than the default init, so every layer matters
    tiny_dir = os.path.join(args.out, "tiny_llama3")
    model.save_pretrained(tiny_dir, safe_serialization=True, max_shard_size="60KB")
    ids = [int(x) for x in np.random.default_rng(0).integers(0, 97, 24)]
    reference["tiny_llama3"] = {"ids": ids, "logits": transformers_logits(tiny_dir, ids).tolist()}

    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f)

    write_smollm2_tokenizer(os.path.join(args.out, "smollm2_tokenizer"), args.smollm2, args.tokenizer_fixtures)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
