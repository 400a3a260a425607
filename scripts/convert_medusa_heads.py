#!/usr/bin/env python3
"""Converts Medusa heads published as a PyTorch file (medusa_lm_head.pt) to safetensors.

The C++ product never unpickles: this script does, with torch's weights-only loader (no code
from the file runs), and writes the same tensors under the same names
(`{head}.{layer}.linear.weight|bias`, `{head}.{num_layers}.weight`, the reference's state
dict) to a safetensors file that `--heads` reads. A config.json beside the .pt (its
medusa_num_heads, medusa_num_layers, base_model_name_or_path) is copied beside the output,
where the loader checks the counts against the file.

    pip install torch safetensors
    python3 scripts/convert_medusa_heads.py medusa-vicuna-7b-v1.3/medusa_lm_head.pt \
        heads/vicuna-7b/medusa_lm_head.safetensors
"""

import argparse
import os
import re
import shutil
import sys

import torch
from safetensors.torch import save_file

NAME = re.compile(r"^(medusa_head\.)?\d+\.\d+\.(linear\.(weight|bias)|weight)$")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="medusa_lm_head.pt")
    parser.add_argument("destination", help="the .safetensors to write")
    args = parser.parse_args()

    state = torch.load(args.source, map_location="cpu", weights_only=True)
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    if not isinstance(state, dict):
        sys.exit(f"{args.source}: expected a state dict, got {type(state).__name__}")
    tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            sys.exit(f"{args.source}: '{name}' is not a tensor")
        if not NAME.match(name):
            sys.exit(f"{args.source}: '{name}' is not a Medusa head tensor "
                     "({head}.{layer}.linear.weight|bias or {head}.{num_layers}.weight)")
        tensors[name.removeprefix("medusa_head.")] = value.detach().contiguous()
    if not tensors:
        sys.exit(f"{args.source}: no tensors")
    os.makedirs(os.path.dirname(os.path.abspath(args.destination)), exist_ok=True)
    save_file(tensors, args.destination, metadata={"format": "pt", "converted_from": os.path.basename(args.source)})
    config = os.path.join(os.path.dirname(os.path.abspath(args.source)), "config.json")
    if os.path.exists(config):
        target = os.path.join(os.path.dirname(os.path.abspath(args.destination)), "config.json")
        if os.path.abspath(config) != os.path.abspath(target):
            shutil.copy(config, target)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    print(f"wrote {args.destination}: {len(tensors)} tensors ({', '.join(dtypes)})")


if __name__ == "__main__":
    main()
