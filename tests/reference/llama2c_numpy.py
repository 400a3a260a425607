#!/usr/bin/env python3
"""Float64 NumPy forward of a llama2.c checkpoint; golden fixture for stories260K.

Exact command that made tests/fixtures/stories260k_reference.json (from the repo root):

    python3 tests/reference/llama2c_numpy.py \
        --checkpoint models/stories260K/stories260K.bin \
        --tokenizer models/stories260K/tok512.model \
        --expected models/stories260K/expected_greedy_200.txt \
        --out tests/fixtures/stories260k_reference.json

Versions used: Python 3.11.7, numpy 2.4.6, sentencepiece 0.2.3.

Independent of the C++ engine: it reads the .bin itself (llama2.c's layout) and follows
llama2.c's run.c step by step (RMSNorm with eps 1e-5, adjacent-pair RoPE with theta
10000 over each head, grouped-query attention, SwiGLU, classifier shared with the
embedding when the header's vocab_size is positive), but in float64.

What it records: greedy decoding from BOS (id 1) as `run stories260K.bin -t 0.0 -n 200`
does (forwards at positions 0..199, BOS at position 0, each forward's argmax printed, so
200 generated ids, the last of which is never fed back; it stops early only if BOS is
produced), the full logits row at the first 32 positions, the top-1/top-2 margin
at every position, and the generated ids. Before writing, it checks that the ids decode
with SentencePiece (tok512.model) to llama2.c's golden text, which validates this
reference against llama2.c's own output.
"""

import argparse
import json
import sys

import numpy as np

BOS_ID = 1
LOGIT_ROWS_RECORDED = 32


def read_checkpoint(path):
    """Returns (config dict, weights dict of float64 arrays) from a llama2.c .bin."""
    raw = np.fromfile(path, dtype=np.uint8)
    header = raw[:28].view(np.int32)
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = (int(v) for v in header)
    shared_classifier = vocab > 0
    vocab = abs(vocab)
    head_size = dim // n_heads
    kv_dim = n_kv_heads * head_size
    floats = raw[28:].view(np.float32).astype(np.float64)

    offset = 0

    def take(*shape):
        nonlocal offset
        count = int(np.prod(shape))
        if offset + count > floats.size:
            sys.exit(f"{path}: truncated while reading a tensor of shape {shape}")
        tensor = floats[offset:offset + count].reshape(shape)
        offset += count
        return tensor

    w = {}
    w["token_embedding"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, dim, dim)
    w["wk"] = take(n_layers, kv_dim, dim)
    w["wv"] = take(n_layers, kv_dim, dim)
    w["wo"] = take(n_layers, dim, dim)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    take(seq_len, head_size // 2)  # freq_cis_real: unused, as in run.c
    take(seq_len, head_size // 2)  # freq_cis_imag: unused, as in run.c
    w["wcls"] = w["token_embedding"] if shared_classifier else take(vocab, dim)
    if offset != floats.size:
        sys.exit(f"{path}: {floats.size - offset} trailing floats after the classifier")

    config = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
                  n_kv_heads=n_kv_heads, vocab_size=vocab, seq_len=seq_len,
                  shared_classifier=shared_classifier)
    return config, w


def rmsnorm(x, weight, eps=1e-5):
    return weight * (x / np.sqrt(np.mean(x * x) + eps))


def rope_adjacent_pairs(vec, pos, head_size, theta=10000.0):
    """Rotates (vec[2i], vec[2i+1]) inside each head by pos * theta^(-2i/head_size)."""
    heads = vec.reshape(-1, head_size // 2, 2)
    i = np.arange(head_size // 2)
    angle = pos * theta ** (-(2.0 * i) / head_size)
    cos, sin = np.cos(angle), np.sin(angle)
    x0, x1 = heads[..., 0], heads[..., 1]
    out = np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    return out.reshape(vec.shape)


class Transformer:
    def __init__(self, config, weights):
        self.c = config
        self.w = weights
        self.head_size = config["dim"] // config["n_heads"]
        kv_dim = config["n_kv_heads"] * self.head_size
        shape = (config["n_layers"], config["seq_len"], kv_dim)
        self.key_cache = np.zeros(shape)
        self.value_cache = np.zeros(shape)

    def forward(self, token, pos):
        c, w, hs = self.c, self.w, self.head_size
        group = c["n_heads"] // c["n_kv_heads"]
        x = w["token_embedding"][token].copy()
        for layer in range(c["n_layers"]):
            xb = rmsnorm(x, w["rms_att"][layer])
            q = rope_adjacent_pairs(w["wq"][layer] @ xb, pos, hs)
            k = rope_adjacent_pairs(w["wk"][layer] @ xb, pos, hs)
            self.key_cache[layer, pos] = k
            self.value_cache[layer, pos] = w["wv"][layer] @ xb

            att_out = np.empty(c["dim"])
            for h in range(c["n_heads"]):
                kv = (h // group) * hs
                keys = self.key_cache[layer, :pos + 1, kv:kv + hs]
                values = self.value_cache[layer, :pos + 1, kv:kv + hs]
                scores = keys @ q[h * hs:(h + 1) * hs] / np.sqrt(hs)
                scores = np.exp(scores - scores.max())
                att_out[h * hs:(h + 1) * hs] = (scores / scores.sum()) @ values
            x = x + w["wo"][layer] @ att_out

            xb = rmsnorm(x, w["rms_ffn"][layer])
            gate = w["w1"][layer] @ xb
            up = w["w3"][layer] @ xb
            x = x + w["w2"][layer] @ (gate / (1.0 + np.exp(-gate)) * up)
        x = rmsnorm(x, w["rms_final"])
        return w["wcls"] @ x


def greedy_from_bos(model, positions):
    """As run.c with -t 0: feed BOS at pos 0, then each argmax; stop early on BOS."""
    token = BOS_ID
    generated, logit_rows, margins = [], [], []
    for pos in range(positions):
        logits = model.forward(token, pos)
        if pos < LOGIT_ROWS_RECORDED:
            logit_rows.append(logits)
        top2 = np.sort(logits)[-2:]
        margins.append(float(top2[1] - top2[0]))
        token = int(np.argmax(logits))
        if token == BOS_ID:
            break
        generated.append(token)
    return generated, logit_rows, margins


def decode_like_run_c(tokenizer_path, ids):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    return sp.decode(ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--expected", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--positions", type=int, default=200)
    args = parser.parse_args()

    config, weights = read_checkpoint(args.checkpoint)
    model = Transformer(config, weights)
    generated, logit_rows, margins = greedy_from_bos(model, args.positions)

    text = decode_like_run_c(args.tokenizer, generated)
    with open(args.expected, encoding="utf-8") as f:
        expected = f.read()
    if text != expected:
        for i, (a, b) in enumerate(zip(text, expected)):
            if a != b:
                break
        sys.exit(f"decoded greedy text differs from {args.expected} at char {i}:\n"
                 f"  ours:     {text[max(0, i - 40):i + 40]!r}\n"
                 f"  expected: {expected[max(0, i - 40):i + 40]!r}")
    print(f"OK: {len(generated)} greedy ids decode to {args.expected}")

    import sentencepiece
    fixture = {
        "description": "stories260K float64 NumPy reference (tests/reference/llama2c_numpy.py): "
                       "greedy decoding from BOS as llama2.c `run -t 0.0 -n 200`; "
                       "decoded ids equal models/stories260K/expected_greedy_200.txt",
        "command": "python3 tests/reference/llama2c_numpy.py --checkpoint "
                   "models/stories260K/stories260K.bin --tokenizer models/stories260K/tok512.model "
                   "--expected models/stories260K/expected_greedy_200.txt "
                   "--out tests/fixtures/stories260k_reference.json",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "sentencepiece": sentencepiece.__version__},
        "checkpoint_sha256": "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
        "config": config,
        "rope": "adjacent pairs (x[2i], x[2i+1]) per head, theta 10000",
        "rms_eps": 1e-5,
        "bos_id": BOS_ID,
        "positions": args.positions,
        "input_ids": [BOS_ID] + generated[:LOGIT_ROWS_RECORDED - 1],
        "logits_note": "logits[p] is the full row after feeding input_ids[p] at position p",
        "logits": [[round(float(v), 6) for v in row] for row in logit_rows],
        "greedy_ids": generated,
        "greedy_ids_note": "argmax of the forward at positions 0..199 (200 ids, BOS excluded); "
                           "greedy_ids[p] is fed at position p+1",
        "top1_margins": [round(m, 6) for m in margins],
        "top1_margins_note": "top-1 minus top-2 logit at each position; small values are near-ties",
        "expected_text": text,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
