#!/usr/bin/env python3
"""The cost of Medusa verification: one forward of T tokens, per weights mode.

For each --weights mode (f32, bf16, q8_0, auto) runs tests/bench/cpu_backend_bench on
SmolLM2-135M-Instruct (the Q4_1 file) at --threads threads and reads its lines
  verify batch of  T tokens after C: X ms per forward
(one forward of a causal batch of T tokens after C cached ones, logits for every row: what a
Medusa step with a T-node tree costs). The modes alternate round-robin for --rounds rounds so
machine noise falls on all of them alike. Prints a Markdown table of the medians and writes
the per-round samples and medians to --json-out, which scripts/plot_benchmarks.py reads:
  {"machine", "threads", "context", "rounds",
   "modes": {mode: {"sizes": [T...], "ms_median": [...], "ms_samples": [[one per round] per T],
                    "decode_tok_s": [...], "prefill_tok_s": [...]}}}

  python3 scripts/bench_verify.py [--rounds 5] [--build build] [--json-out docs/benchmarks/verify.json]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

from bench_common import ROOT, SMOL, machine

MODES = ["f32", "bf16", "q8_0", "auto"]
VERIFY = re.compile(r"verify batch of\s+(\d+) tokens after (\d+): ([\d.]+) ms per forward")
RATES = re.compile(r"decode ([\d.]+) tokens/s.*prefill ([\d.]+) tokens/s")


def bench(args, mode):
    """{T: ms}, the context length, and (decode, prefill) tokens/s of one cpu_backend_bench run."""
    out = subprocess.run([os.path.join(args.build, "bin", "cpu_backend_bench"), "--model", args.model,
                          "--weights", mode, "--threads", str(args.threads), "--runs", str(args.runs),
                          "--steps", "16", "--prefill", "16", "--verify", args.sizes],
                         check=True, capture_output=True, text=True).stdout
    times = {int(t): float(ms) for t, _, ms in VERIFY.findall(out)}
    context = int(VERIFY.search(out).group(2))
    decode, prefill = map(float, RATES.search(out).groups())
    return times, context, decode, prefill


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--model", default=SMOL)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--sizes", default="1,2,4,8,16,32,64", help="verification batch sizes T")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=5, help="cpu_backend_bench's own runs (it reports their median)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json-out", default=os.path.join(ROOT, "docs", "benchmarks", "verify.json"))
    args = p.parse_args()
    modes = args.modes.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    samples = {m: [] for m in modes}
    context = None
    for r in range(args.rounds):
        for mode in modes:
            times, context, decode, prefill = bench(args, mode)
            samples[mode].append((times, decode, prefill))
            print(f"round {r + 1}/{args.rounds} {mode}: " + ", ".join(f"T={t} {times[t]:.2f} ms" for t in sizes),
                  file=sys.stderr)
    result = {"machine": machine(), "threads": args.threads, "context": context, "rounds": args.rounds, "modes": {}}
    for mode in modes:
        runs = samples[mode]
        per_size = [[times[t] for times, _, _ in runs] for t in sizes]
        result["modes"][mode] = {
            "sizes": sizes,
            "ms_median": [statistics.median(s) for s in per_size],
            "ms_samples": per_size,
            "decode_tok_s": [d for _, d, _ in runs],
            "prefill_tok_s": [p for _, _, p in runs],
        }
    print(f"{result['machine']}, {args.threads} threads, forward of T tokens after {context}, "
          f"median ms of {args.rounds} alternating rounds\n")
    print("| weights | " + " | ".join(f"T={t}" for t in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for mode in modes:
        print(f"| {mode} | " + " | ".join(f"{ms:.2f}" for ms in result["modes"][mode]["ms_median"]) + " |")
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
