#!/usr/bin/env python3
"""Golden fixture for the CUDA backend's host-side fp16 and bfloat16 conversions
(kernels/cuda/half_precision.h), written by NumPy's float16 (IEEE binary16, round to
nearest even) and ml_dtypes' bfloat16 (round to nearest even), not by our code.

Command that made the committed fixture (from the repository root; numpy 2.4.6,
ml_dtypes 0.7.0):
    python3 tests/reference/make_half_fixtures.py

Writes tests/fixtures/half_conversions.json:
  to_half:      float32 bit patterns and the fp16 and bf16 bit patterns they round to:
                zeros, infinities, NaNs, the formats' limits and the values on either side
                of them, subnormals, exact ties between two neighbours (which must round to
                the even one) and their nearest floats, and seeded random floats of every
                magnitude.
  from_half:    fp16 bit patterns (every exponent, both signs, the edges of each mantissa
                range and seeded random ones) and the float32 bit patterns they widen to.
NaN payloads are not compared (only that NaN stays NaN).
"""
import json
import os

import ml_dtypes
import numpy as np

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "half_conversions.json")


def f32(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


def neighbours(x):
    """x and the float32 values just below and above it."""
    x = np.float32(x)
    return [np.nextafter(x, np.float32(-np.inf)), x, np.nextafter(x, np.float32(np.inf))]


def inputs():
    values = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, 2.0, 3.0, 0.1, -0.1, 1e-8, 1e8]
    # fp16 limits: the largest finite (65504), where rounding overflows (65520), the smallest
    # normal (2^-14) and subnormal (2^-24), and half of that (ties to zero).
    for edge in [65504.0, 65520.0, 65536.0, 2.0**-14, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-15]:
        values += neighbours(edge) + neighbours(-edge)
    # bf16 limits.
    bf16_max = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    for edge in [bf16_max, 2.0**-126, 2.0**-133, 3.3895313892515355e38]:
        values += neighbours(edge)
    # Exact ties: halfway between two fp16 (10-bit mantissa) or bf16 (7-bit) neighbours,
    # with an even and an odd lower neighbour.
    for mantissa in [0, 1, 2, 3, 1022, 1023]:
        for exponent in [-14, -3, 0, 7, 15]:
            low = (1 + mantissa / 1024.0) * 2.0**exponent
            values += neighbours(low + 2.0**exponent / 2048.0)
    for mantissa in [0, 1, 2, 126, 127]:
        for exponent in [-126, -20, 0, 20, 127]:
            low = (1 + mantissa / 128.0) * 2.0**exponent
            values += neighbours(low + 2.0**exponent / 256.0)
    # Subnormal fp16 ties.
    for k in [0, 1, 2, 3, 511, 1022]:
        values += neighbours((k + 0.5) * 2.0**-24)
    rng = np.random.default_rng(20261206)
    values += list(rng.standard_normal(400).astype(np.float32))
    values += list((rng.standard_normal(400) * np.exp2(rng.integers(-30, 30, 400))).astype(np.float32))
    values += list(f32(rng.integers(0, 2**32, 400, dtype=np.uint64)))
    return np.array(values, dtype=np.float32)


def half_patterns():
    patterns = set()
    for sign in [0, 0x8000]:
        for exponent in range(32):
            for mantissa in [0, 1, 2, 0x1FF, 0x200, 0x3FE, 0x3FF]:
                patterns.add(sign | exponent << 10 | mantissa)
    rng = np.random.default_rng(7)
    patterns.update(int(p) for p in rng.integers(0, 2**16, 500))
    return np.array(sorted(patterns), dtype=np.uint16)


def main():
    x = inputs()
    with np.errstate(over="ignore"):
        to_f16 = x.astype(np.float16).view(np.uint16)
    to_bf16 = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    h = half_patterns()
    widened = h.view(np.float16).astype(np.float32).view(np.uint32)
    fixture = {
        "to_half": [{"f32": int(a), "f16": int(b), "bf16": int(c)}
                    for a, b, c in zip(x.view(np.uint32), to_f16, to_bf16)],
        "from_half": [{"f16": int(a), "f32": int(b)} for a, b in zip(h, widened)],
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=0)
        f.write("\n")
    print(f"wrote {OUT}: {len(fixture['to_half'])} conversions to 16 bits, {len(fixture['from_half'])} from fp16")


if __name__ == "__main__":
    main()
