#!/usr/bin/env python3
"""Held-out accuracy of Medusa and Hydra heads against the positions they were trained on.

Trains heads on the first N positions of one self-distillation (`medusa train --train-rows N`,
the shipped heads' recipe otherwise) for each N and head type, and collects from each run's
calibration (100 AlpacaEval prompts the heads never saw) the per-head top-1 and top-5
accuracy and the top-1 chains (heads 0..k all right), with the training time.

  python3 scripts/heads_data_curve.py --data-cache DISTILL.safetensors \\
      --rows 32768,65536,131072,262144,0 --head-type hydra --head-type medusa \\
      --work-dir /tmp/curve --json-out docs/benchmarks/heads_data_curve.json

The data cache is made by the first run when missing (all 2,474 ShareGPT seed prompts: about 15
minutes on 2 cores) and reused by every other. --rows 0 means all of them.
"""
import argparse
import json
import os
import subprocess
import sys

from bench_common import ROOT, SMOL

RECIPE = ["--share-lm-head", "--num-layers", "2", "--num-prompts", "0", "--max-prompt-tokens", "256",
          "--gen-tokens", "256", "--concurrency", "32", "--epochs", "2", "--batch-size", "128", "--lr", "2e-3",
          "--seed", "0", "--calibration-count", "100", "--threads", "2"]


def train(build, head_type, rows, cache, work_dir, extra):
    out = os.path.join(work_dir, f"{head_type}-{rows or 'all'}.safetensors")
    cmd = [os.path.join(build, "bin", "medusa"), "train", "--model", SMOL, "--out", out, "--head-type", head_type,
           "--data-cache", cache, "--train-rows", str(rows)] + RECIPE + extra
    print(" ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    stem = out[: -len(".safetensors")]
    settings = json.load(open(stem + ".json"))
    calibration = json.load(open(stem + ".calibration.json"))
    topk = calibration["topk_accuracy"]
    return {
        "head_type": head_type,
        "train_rows": settings["cost"]["train_rows"],
        "train_seconds": settings["cost"]["train_seconds"],
        "top1": [h[0] for h in topk],
        "top5": [h[4] for h in topk],
        "chain_top1": calibration["chain_top1"],
        "held_out_rows": calibration["rows"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--data-cache", required=True)
    p.add_argument("--rows", default="32768,65536,131072,262144,0")
    p.add_argument("--head-type", action="append", choices=["medusa", "hydra"])
    p.add_argument("--work-dir", required=True)
    p.add_argument("--json-out")
    p.add_argument("--extra", default="", help="more medusa train flags, space-separated")
    args = p.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    runs = []
    for head_type in args.head_type or ["hydra", "medusa"]:
        for rows in [int(r) for r in args.rows.split(",")]:
            run = train(args.build, head_type, rows, args.data_cache, args.work_dir, args.extra.split())
            runs.append(run)
            print(json.dumps(run), flush=True)
    result = {"model": os.path.basename(SMOL), "recipe": " ".join(RECIPE + args.extra.split()), "runs": runs}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
