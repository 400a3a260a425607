#!/usr/bin/env python3
"""Golden fixtures for the safetensors reader and the Medusa heads loader, written by the
Hugging Face `safetensors` package (the reference implementation of the format) and
PyTorch, not by our code.

Command that made the committed fixtures (from the repository root; safetensors 0.8.0,
torch 2.15.0, numpy 2.4.6):
    python3 tests/reference/make_safetensors_fixtures.py

Writes:
  tests/fixtures/safetensors_synthetic.safetensors
        tensors of dtype F32, F16, BF16 (seeded random data plus special values: 0, -0,
        inf, -inf, subnormals), an I32 tensor (not convertible to float), a scalar, an empty
        tensor, a 3-d tensor, and __metadata__.
  tests/fixtures/safetensors_synthetic.json
        for every tensor: dtype, shape, data_offsets, and (float dtypes) the values as
        float32 bit patterns converted by torch; the metadata; the header length.
  tests/fixtures/medusa_heads_{proj,noproj}.safetensors
        Medusa heads in the reference layout (FasterDecoding/Medusa `ResBlock`:
        x + SiLU(Linear(x)), then a bias-free vocabulary Linear), made by a PyTorch module
        written here after the reference's definition: 3 heads x 2 ResBlocks, dim 16,
        vocab 40; `proj` has each head's own vocabulary projection (F32), `noproj` has
        none (F16 weights; the base classifier is used) .
  tests/fixtures/medusa_heads.json
        the hidden state, the base classifier, and every head's logits computed by torch
        in float64 from the stored (rounded) weights, for both files.
Reruns give equivalent files, not always identical bytes: the package writes
__metadata__ keys in hash order.
"""
import json
import os
import struct

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def bits(t):
    """A float tensor -> list of float32 bit patterns (exact, inf-safe JSON)."""
    return t.to(torch.float32).contiguous().numpy().view(np.uint32).ravel().tolist()


# ---------------------------------------------------------------- reader fixture

def synthetic_tensors():
    g = torch.Generator().manual_seed(1234)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-40, -3e-39, 65504.0, 1.0])
    f32 = torch.cat([torch.randn(2 * 7 - 8, generator=g) * 3, special]).reshape(2, 7)
    f16 = torch.cat([torch.randn(12, generator=g), torch.tensor([0.0, -0.0, float("inf"),
                                                                 6.0e-8])]).to(torch.float16)
    bf16 = (torch.randn(4, 5, generator=g) * 100).to(torch.bfloat16)
    return {
        "weights.f32": f32,
        "weights.f16": f16.reshape(4, 4),
        "weights.bf16": bf16,
        "counts.i32": torch.arange(-3, 3, dtype=torch.int32),
        "scalar.f32": torch.tensor(2.5, dtype=torch.float32),
        "empty.f32": torch.zeros(0, 3, dtype=torch.float32),
        "cube.f32": torch.randn(2, 3, 2, generator=g),
    }


def write_synthetic():
    path = os.path.join(FIXTURES, "safetensors_synthetic.safetensors")
    tensors = synthetic_tensors()
    metadata = {"format": "pt", "producer": "make_safetensors_fixtures.py"}
    save_file(tensors, path, metadata=metadata)
    # Read the header back from the bytes the package wrote (offsets are its choice).
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    expected = {"header_len": header_len, "metadata": header["__metadata__"], "tensors": {}}
    for name, t in tensors.items():
        entry = dict(header[name])
        if t.is_floating_point():
            entry["bits"] = bits(t)
        expected["tensors"][name] = entry
    with open(os.path.join(FIXTURES, "safetensors_synthetic.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------- Medusa heads fixture

class ResBlock(torch.nn.Module):
    """The reference's residual block: x + SiLU(Linear(x)), with bias."""

    def __init__(self, dim):
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim)
        self.act = torch.nn.SiLU()

    def forward(self, x):
        return x + self.act(self.linear(x))


def make_heads(num_heads, num_layers, dim, vocab, with_projection, seed):
    torch.manual_seed(seed)
    heads = torch.nn.ModuleList()
    for _ in range(num_heads):
        layers = [ResBlock(dim) for _ in range(num_layers)]
        if with_projection:
            layers.append(torch.nn.Linear(dim, vocab, bias=False))
        heads.append(torch.nn.Sequential(*layers))
    # Non-trivial weights (the reference initializes the ResBlock weight to zero).
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0.0, 0.4)
    return heads


def write_heads():
    dim, vocab, num_heads, num_layers = 16, 40, 3, 2
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(dim, generator=g)
    classifier = torch.randn(vocab, dim, generator=g) * 0.5
    expected = {"dim": dim, "vocab": vocab, "num_heads": num_heads, "num_layers": num_layers,
                "hidden": hidden.tolist(), "base_classifier": classifier.reshape(-1).tolist()}
    for tag, with_projection, dtype in (("proj", True, torch.float32),
                                        ("noproj", False, torch.float16)):
        heads = make_heads(num_heads, num_layers, dim, vocab, with_projection,
                           seed=11 if with_projection else 12)
        state = {k: v.detach().to(dtype).contiguous() for k, v in heads.state_dict().items()}
        save_file(state, os.path.join(FIXTURES, f"medusa_heads_{tag}.safetensors"),
                  metadata={"medusa_num_heads": str(num_heads),
                            "medusa_num_layers": str(num_layers)})
        # Logits from the stored weights, in float64.
        heads64 = make_heads(num_heads, num_layers, dim, vocab, with_projection, seed=0).double()
        heads64.load_state_dict({k: v.double() for k, v in state.items()})
        logits = []
        with torch.no_grad():
            for head in heads64:
                h = head(hidden.double())
                if not with_projection:
                    h = classifier.double() @ h
                logits.append(h.tolist())
        expected[tag] = {"names": sorted(state.keys()), "logits": logits}
    with open(os.path.join(FIXTURES, "medusa_heads.json"), "w") as f:
        json.dump(expected, f)
        f.write("\n")


if __name__ == "__main__":
    os.makedirs(FIXTURES, exist_ok=True)
    write_synthetic()
    write_heads()
