#!/usr/bin/env python3
"""Writes a Llama GGUF cut to its first N layers, small enough to carry to a lent GPU.

The cut keeps the vocabulary, the chat template, every other key and the first N blocks'
tensors byte for byte; `{arch}.block_count` becomes N. `--embedding-type Q4_1` also
requantizes the token embedding (which SmolLM2 shares with its classifier) from gguf-py's
dequantization of it, the largest tensor of a small model. The result is a smaller model,
not the original: tests compare backends and decoding modes on it, never against the full
model's outputs.

    python3 scripts/cut_gguf.py --layers 4 --embedding-type Q4_1 \
        models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf devpack/SmolLM2-135M-Instruct.cut4.gguf

Needs the PyPI package `gguf` (tested with 0.19.0).
"""

import argparse
import re
import sys

import gguf


def copy_metadata(reader, writer, arch, layers):
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # header fields; the writer adds the architecture itself
        value_type = field.types[0]
        if name == f"{arch}.block_count":
            writer.add_uint32(name, layers)
            continue
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if value_type == gguf.GGUFValueType.ARRAY and len(value) == 0:
            sys.exit(f"{name}: empty arrays cannot be written by gguf-py")
        writer.add_key_value(name, value, value_type, sub_type=sub_type)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--embedding-type", choices=["keep", "Q4_0", "Q4_1", "Q8_0"], default="keep")
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.source)
    arch = reader.fields["general.architecture"].contents()
    total = int(reader.fields[f"{arch}.block_count"].contents())
    if not 1 <= args.layers <= total:
        sys.exit(f"--layers must be in [1, {total}]")
    writer = gguf.GGUFWriter(args.destination, arch)
    alignment = reader.fields.get("general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    copy_metadata(reader, writer, arch, args.layers)
    kept = 0
    for tensor in reader.tensors:
        block = re.match(r"blk\.(\d+)\.", tensor.name)
        if block and int(block.group(1)) >= args.layers:
            continue
        if tensor.name == "token_embd.weight" and args.embedding_type != "keep":
            qtype = gguf.GGMLQuantizationType[args.embedding_type]
            values = gguf.dequantize(tensor.data, tensor.tensor_type)
            shape = tuple(int(n) for n in reversed(tensor.shape))
            writer.add_tensor(tensor.name, gguf.quantize(values.reshape(shape), qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
        kept += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.destination}: {args.layers} of {total} layers, {kept} tensors")


if __name__ == "__main__":
    main()
