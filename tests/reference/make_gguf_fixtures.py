#!/usr/bin/env python3
"""Golden fixtures for the GGUF reader and the model loaders, made with gguf-py
(the reference GGUF implementation from llama.cpp) and numpy, not with our code.

Command that made the committed fixtures (from the repository root, gguf==0.19.0, numpy):
    python3 tests/reference/make_gguf_fixtures.py

Writes:
  tests/fixtures/gguf_synthetic.gguf   a small GGUF v3 file: metadata of every value type
                                       (arrays of strings, nested arrays, general.alignment = 64)
                                       and one tensor of each type F32, F16, BF16, Q8_0, Q4_0,
                                       Q4_1 from seeded random data (plus special values)
  tests/fixtures/gguf_synthetic.json   its expected metadata and dequantized tensor values
                                       (gguf.quants.dequantize), floats as uint32 bit patterns
  tests/fixtures/model_weight_samples.json
                                       samples of real weights: SmolLM2-135M-Instruct.Q4_1.gguf
                                       dequantized by gguf-py, and stories260K.bin read by numpy
                                       in llama2.c's run.c layout
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SMOLLM2 = os.path.join(ROOT, "models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
STORIES = os.path.join(ROOT, "models", "stories260K", "stories260K.bin")


def bits(values):
    """float32 values -> list of uint32 bit patterns (exact, NaN-safe JSON)."""
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).ravel().tolist()


# ---------------------------------------------------------------- synthetic file
METADATA = [
    # (key, GGUF type, sub type for arrays, value)
    ("test.uint8", VT.UINT8, None, 200),
    ("test.int8", VT.INT8, None, -100),
    ("test.uint16", VT.UINT16, None, 60000),
    ("test.int16", VT.INT16, None, -30000),
    ("test.uint32", VT.UINT32, None, 4000000000),
    ("test.int32", VT.INT32, None, -2000000000),
    ("test.float32", VT.FLOAT32, None, 0.1),
    ("test.bool_true", VT.BOOL, None, True),
    ("test.bool_false", VT.BOOL, None, False),
    ("test.string", VT.STRING, None, "h\u00e9llo \u2713 world"),
    ("test.string_empty", VT.STRING, None, ""),
    ("test.uint64", VT.UINT64, None, 2**63 + 5),  # beyond int64: GetInt must refuse it
    ("test.int64", VT.INT64, None, -(2**62) - 7),
    ("test.float64", VT.FLOAT64, None, 1.0 / 3.0),
    ("test.array.uint8", VT.ARRAY, VT.UINT8, [0, 1, 255]),
    ("test.array.int16", VT.ARRAY, VT.INT16, [-32768, 0, 32767]),
    ("test.array.int32", VT.ARRAY, VT.INT32, [1, -2, 3]),
    ("test.array.uint64", VT.ARRAY, VT.UINT64, [0, 2**40]),
    ("test.array.int64", VT.ARRAY, VT.INT64, [-(2**40), 5]),
    ("test.array.float32", VT.ARRAY, VT.FLOAT32, [0.5, -1.25, 3e10, 1e-3]),
    ("test.array.float64", VT.ARRAY, VT.FLOAT64, [0.1, -2.5]),
    ("test.array.bool", VT.ARRAY, VT.BOOL, [True, False, True]),
    ("test.array.string", VT.ARRAY, VT.STRING, ["a", "", "\u00fc", "a longer string"]),
    ("test.array.nested_int", VT.ARRAY, None, [[1, 2], [3], [4, 5, 6]]),
    ("test.array.nested_string", VT.ARRAY, None, [["x", "y"], ["z"]]),
    ("test.array.nested_deep", VT.ARRAY, None, [[[1], [2, 3]], [[4]]]),
]


def json_value(vtype, value):
    """What the metadata must read back as (float32 rounding applied)."""
    if vtype == VT.FLOAT32:
        return float(np.float32(value))
    return value


def typed_array_json(sub, values):
    if sub == VT.FLOAT32:
        return [float(np.float32(v)) for v in values]
    return values


def tensor_sources(rng):
    """name -> (float32 source array in numpy order, ggml type)."""
    special = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6.0e-8, -3.0e-5, 1.0e-4,
                        np.inf, -np.inf, np.nan, 1.0e-40], dtype=np.float32)
    f32 = rng.standard_normal((3, 64)).astype(np.float32)
    f32.ravel()[:special.size] = special
    f16 = (rng.standard_normal((3, 64)) * 4).astype(np.float32)
    f16.ravel()[:special.size] = special
    bf16 = (rng.standard_normal((3, 64)) * 1e3).astype(np.float32)
    bf16.ravel()[:special.size] = special
    q8 = rng.standard_normal((2, 2, 32)).astype(np.float32)  # a 3-D tensor: ggml dims [32, 2, 2]
    q4_0 = rng.standard_normal((3, 64)).astype(np.float32)
    q4_0[2, 32:] = 0.0  # an all-zero block (scale 0)
    q4_1 = (rng.standard_normal((3, 64)) - 1.0).astype(np.float32)
    q4_1[1, :32] = 0.75  # a constant block (d = 0, value = m)
    return {
        "t.f32": (f32, QT.F32),
        "t.f16": (f16, QT.F16),
        "t.bf16": (bf16, QT.BF16),
        "t.q8_0": (q8, QT.Q8_0),
        "t.q4_0": (q4_0, QT.Q4_0),
        "t.q4_1": (q4_1, QT.Q4_1),
    }


def make_synthetic():
    path = os.path.join(FIXTURES, "gguf_synthetic.gguf")
    writer = gguf.GGUFWriter(path, "synthetic")
    writer.add_custom_alignment(64)
    expected_meta = {
        "general.architecture": {"type": "string", "value": "synthetic"},
        "general.alignment": {"type": "uint32", "value": 64},
    }
    for key, vtype, sub, value in METADATA:
        writer.add_key_value(key, value, vtype, sub_type=sub)
        if vtype == VT.ARRAY:
            expected = typed_array_json(sub, value) if sub is not None else value
        else:
            expected = json_value(vtype, value)
        expected_meta[key] = {"type": vtype.name.lower(), "value": expected}

    expected_tensors = {}
    for name, (source, qtype) in tensor_sources(np.random.default_rng(20240601)).items():
        if qtype == QT.F32:
            data = source
        elif qtype == QT.F16:
            data = source.astype(np.float16)
        else:
            data = gguf.quants.quantize(source, qtype)
        raw_dtype = None if qtype in (QT.F32, QT.F16) else qtype
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
        values = gguf.quants.dequantize(data.view(np.uint8) if raw_dtype else data, qtype)
        expected_tensors[name] = {
            "type": qtype.name,
            "type_id": int(qtype),
            "dims": list(reversed(source.shape)),  # ggml order
            "value_bits": bits(values),
        }

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Read it back with gguf-py's own reader for the offsets the C++ tests mutate.
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        expected_tensors[t.name]["data_offset"] = int(t.data_offset)
    out = {
        "file": "gguf_synthetic.gguf",
        "version": 3,
        "alignment": 64,
        "data_offset": int(reader.data_offset),
        "data_end": max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors),
        "metadata": expected_meta,
        "key_order": list(reader.fields.keys())[3:],  # after GGUF.version/tensor_count/kv_count
        # where each key-value pair (its key's length field) and tensor info starts
        "key_offsets": {k: int(f.offset) for k, f in list(reader.fields.items())[3:]},
        "tensor_info_offsets": {t.name: int(t.field.offset) for t in reader.tensors},
        "tensors": expected_tensors,
        "tensor_order": [t.name for t in reader.tensors],
    }
    with open(os.path.join(FIXTURES, "gguf_synthetic.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


# ---------------------------------------------------------------- real weights
def sample(values, rng, n=64):
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    idx = np.sort(rng.choice(flat.size, size=n, replace=False))
    return {
        "num_elements": int(flat.size),
        "first_bits": bits(flat[:n]),
        "indices": idx.tolist(),
        "index_bits": bits(flat[idx]),
    }


def smollm2_samples(rng):
    reader = gguf.GGUFReader(SMOLLM2)
    wanted = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
              "blk.29.ffn_down.weight", "blk.7.attn_norm.weight", "output_norm.weight"]
    out = {}
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        entry = {"type": t.tensor_type.name, "dims": [int(d) for d in t.shape]}
        entry.update(sample(values, rng))
        out[t.name] = entry
    missing = set(wanted) - set(out)
    if missing:
        sys.exit(f"tensors not found in {SMOLLM2}: {sorted(missing)}")
    return out


def stories_samples(rng):
    """stories260K.bin as llama2.c's run.c maps it (memory_map_weights)."""
    raw = np.fromfile(STORIES, dtype=np.uint8)
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = raw[:28].view(np.int32).tolist()
    head = dim // heads
    kv_dim = dim * kv_heads // heads
    w = raw[28:].view(np.float32)
    sizes = [("token_embedding", vocab * dim), ("rms_att", layers * dim),
             ("wq", layers * dim * dim), ("wk", layers * dim * kv_dim),
             ("wv", layers * dim * kv_dim), ("wo", layers * dim * dim),
             ("rms_ffn", layers * dim), ("w1", layers * dim * hidden),
             ("w2", layers * hidden * dim), ("w3", layers * dim * hidden),
             ("rms_final", dim), ("freq_cis_real", seq_len * head // 2),
             ("freq_cis_imag", seq_len * head // 2)]
    tensors, pos = {}, 0
    for name, n in sizes:
        tensors[name] = w[pos:pos + n]
        pos += n
    assert pos == w.size and vocab > 0, "stories260K: unexpected layout"
    per_layer = {k: v.reshape(layers, -1) for k, v in tensors.items()
                 if k not in ("token_embedding", "rms_final", "freq_cis_real", "freq_cis_imag")}
    out = {"header": [dim, hidden, layers, heads, kv_heads, vocab, seq_len]}
    picks = [("token_embedding", tensors["token_embedding"]), ("rms_final", tensors["rms_final"]),
             ("layers.0.wq", per_layer["wq"][0]), ("layers.4.wk", per_layer["wk"][4]),
             ("layers.2.wv", per_layer["wv"][2]), ("layers.3.wo", per_layer["wo"][3]),
             ("layers.1.rms_att", per_layer["rms_att"][1]),
             ("layers.4.rms_ffn", per_layer["rms_ffn"][4]),
             ("layers.1.w1", per_layer["w1"][1]), ("layers.2.w2", per_layer["w2"][2]),
             ("layers.3.w3", per_layer["w3"][3])]
    for name, values in picks:
        out[name] = sample(values, rng, n=min(32, values.size))
    return out


def main():
    os.makedirs(FIXTURES, exist_ok=True)
    make_synthetic()
    rng = np.random.default_rng(7)
    samples = {
        "smollm2_file": "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "smollm2": smollm2_samples(rng),
        "stories260K_file": "models/stories260K/stories260K.bin",
        "stories260K": stories_samples(rng),
    }
    path = os.path.join(FIXTURES, "model_weight_samples.json")
    with open(path, "w") as f:
        json.dump(samples, f, indent=1)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
