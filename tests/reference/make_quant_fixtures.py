#!/usr/bin/env python3
"""Golden fixture for the weight quantizers (kernels/model/weight_format.cc), made with gguf-py's
reference quantizers (gguf.quants.quantize, a numpy port of ggml's quantize_row_*_ref), not with
our code.

Command that made the committed fixture (from the repository root, gguf==0.19.0, numpy 2.4):
    python3 tests/reference/make_quant_fixtures.py

Writes tests/fixtures/quant_golden.json: rows of seeded float32 values (as uint32 bit patterns;
some rows with constant values, zeros, large and tiny magnitudes) and, per type (F16, BF16,
Q8_0, Q4_0, Q4_1), their quantized bytes (hex) and those bytes dequantized (uint32 bits).
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def rows():
    rng = np.random.default_rng(20261207)
    out = [
        rng.standard_normal(128).astype(np.float32),
        (rng.standard_normal(64) * 0.02).astype(np.float32),  # weight-like magnitudes
        (rng.uniform(-3e3, 3e3, 64)).astype(np.float32),
        np.zeros(32, np.float32),
        np.full(32, 0.375, np.float32),
        np.concatenate([np.full(16, -1.5, np.float32), rng.standard_normal(16).astype(np.float32)]),
        (rng.standard_normal(32) * 1e-6).astype(np.float32),
    ]
    return out


def main():
    types = {"f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0, "q4_0": QT.Q4_0, "q4_1": QT.Q4_1}
    cases = []
    for values in rows():
        case = {"values": values.view(np.uint32).tolist()}
        for name, qt in types.items():
            q = gguf.quants.quantize(values.reshape(1, -1), qt)
            back = gguf.quants.dequantize(q, qt).astype(np.float32).reshape(-1)
            case[name] = {"bytes": q.tobytes().hex(), "dequantized": back.view(np.uint32).tolist()}
        cases.append(case)
    path = os.path.join(ROOT, "tests", "fixtures", "quant_golden.json")
    with open(path, "w") as f:
        json.dump({"generator": f"gguf-py {gguf.__version__ if hasattr(gguf, '__version__') else '0.19.0'}",
                   "cases": cases}, f)
        f.write("\n")
    print(path)


if __name__ == "__main__":
    main()
