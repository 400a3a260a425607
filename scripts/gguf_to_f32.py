#!/usr/bin/env python3
"""Rewrites a GGUF model with every tensor dequantized to F32 (or F16).

Used for equal-precision benchmarks against llama.cpp: our engine dequantizes a
quantized GGUF to float32 at load time and computes in float32, so the fair peer run is
llama.cpp on the same weights stored as F32. The metadata is copied unchanged except
general.file_type (0 = all F32, 1 = mostly F16); the weights are exactly gguf-py's
dequantization of the source (for F16, rounded to half precision; 1-D tensors such as
norms stay F32, as llama.cpp's own converter does).

    python3 scripts/gguf_to_f32.py models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        models/smollm2/SmolLM2-135M-Instruct.F32.gguf
    python3 scripts/gguf_to_f32.py --f16 models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        models/smollm2/SmolLM2-135M-Instruct.F16.gguf

Needs the PyPI package `gguf` (tested with 0.19.0).
"""

import argparse
import sys

import numpy as np
import gguf

FILE_TYPE_ALL_F32 = 0
FILE_TYPE_MOSTLY_F16 = 1


def copy_metadata(reader, writer, file_type):
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # header fields; the writer adds the architecture itself
        if name == "general.file_type":
            writer.add_uint32(name, file_type)
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if value_type == gguf.GGUFValueType.ARRAY and len(value) == 0:
            sys.exit(f"{name}: empty arrays cannot be written by gguf-py")
        writer.add_key_value(name, value, value_type, sub_type=sub_type)


def converted_tensor(tensor, to_f16):
    shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order: rows last-major
    values = gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    values = values.reshape(shape)
    if to_f16 and values.ndim > 1:
        return values.astype(np.float16)
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--f16", action="store_true", help="write 2-D tensors as F16")
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.source)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(args.destination, arch)
    alignment = reader.fields.get("general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    copy_metadata(reader, writer,
                  FILE_TYPE_MOSTLY_F16 if args.f16 else FILE_TYPE_ALL_F32)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, converted_tensor(tensor, args.f16))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.destination}: {len(reader.tensors)} tensors as "
          f"{'F16 (1-D F32)' if args.f16 else 'F32'}")


if __name__ == "__main__":
    main()
