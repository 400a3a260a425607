#!/usr/bin/env python3
"""Medusa vs plain decoding, side by side, with `medusa generate` end to end.

For each configuration (plain decoding, then one Medusa run per tree) it runs
`medusa generate --json` over the same AlpacaEval prompts (chat template, greedy),
alternating the configurations for --rounds rounds so machine noise falls on all of
them alike. Per configuration it reports, over all prompts of a round:
  acceleration = new tokens / decoding steps (the same every round: greedy is exact),
  step_ms      = decode seconds / decoding steps after the first token,
  tokens/s     = tokens after the first / decode seconds,
and then medians over rounds of overhead = step_ms / plain step_ms and
speedup = tokens/s / plain tokens/s, next to acceleration / overhead (which the
speedup should equal within noise). It also checks that every Medusa run produced
exactly the plain run's tokens.

  python3 scripts/bench_medusa.py --heads HEADS.safetensors \
      --tree chain --tree 8=trees/8.json --tree mc_sim_7b_63 [--prompts 20] [--rounds 3] \
      [--weights auto] [--json-out docs/benchmarks/medusa.json]
A --tree value is a preset name, a JSON file of paths, or auto, optionally labelled
LABEL=VALUE; ENVELOPE@N is a dynamic tree (`--tree ENVELOPE --tree-budget N`), auto-dynamic the auto
tree's sizes with dynamic trees (`--tree auto --dynamic-tree`); VALUE+lookupN adds context lookup
drafts of up to N tokens (`--lookup-tokens N`); NAME:VALUE runs
VALUE with the heads given as --other-heads NAME=PATH (e.g. Hydra heads beside Medusa ones). --weights is passed to `medusa generate` (f32, bf16, q8_0, auto, ...). Prints a
Markdown table and the raw numbers as JSON; --json-out also writes the medians per tree
({"machine", "threads", "weights", "trees": [{"tree", "nodes", "tokens_per_second",
"plain_tokens_per_second", "speedup", "tokens_per_step", ...}]}), which
scripts/plot_benchmarks.py reads.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from bench_common import ROOT, SMOL, machine, prompts_file


def run_config(args, prompts, tree):
    cmd = [os.path.join(args.build, "bin", "medusa"), "generate", "--model", args.model, "--chat",
           "--prompts", prompts, "--max-tokens", str(args.max_tokens), "--threads", str(args.threads), "--json"]
    heads = args.heads
    if tree is not None and ":" in tree and tree.split(":", 1)[0] in args.other_heads:
        name, tree = tree.split(":", 1)
        heads = args.other_heads[name]
    if heads:
        cmd += ["--heads", heads]
    if args.weights:
        cmd += ["--weights", args.weights]
    if tree is not None and "+lookup" in tree:  # VALUE+lookupN: context lookup drafts beside the heads
        tree, tokens = tree.rsplit("+lookup", 1)
        cmd += ["--lookup-tokens", tokens]
    if tree is None:
        cmd += ["--no-medusa"]
    elif tree == "auto-dynamic":  # the auto tree's sizes, each step's nodes chosen dynamically
        cmd += ["--tree", "auto", "--dynamic-tree"]
    elif "@" in tree:  # ENVELOPE@BUDGET: a dynamic tree of BUDGET nodes from ENVELOPE
        envelope, budget = tree.rsplit("@", 1)
        cmd += ["--tree", envelope, "--tree-budget", budget]
    else:
        cmd += ["--tree", tree]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    recs = [json.loads(line) for line in out.splitlines() if line.strip()]
    new = sum(r["new_tokens"] for r in recs)
    steps = sum(r["steps"] for r in recs)
    decode = sum(r["decode_seconds"] for r in recs)
    return {
        "acceleration": new / steps,
        "step_ms": 1e3 * decode / sum(r["steps"] - 1 for r in recs),
        "tokens_per_second": sum(r["new_tokens"] - 1 for r in recs) / decode,
        "tree_nodes": recs[0].get("tree_nodes", 1),
        "lookup_steps": sum(r.get("lookup_steps", 0) for r in recs),
        "lookup_accepted_tokens": sum(r.get("lookup_accepted_tokens", 0) for r in recs),
        "steps": steps,
        "new_tokens": new,
        "token_ids": [r["token_ids"] for r in recs],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--model", default=SMOL)
    p.add_argument("--heads", default="")
    p.add_argument("--tree", action="append", default=[], help="LABEL=VALUE or VALUE; repeatable")
    p.add_argument("--other-heads", action="append", default=[], help="NAME=PATH: heads for trees NAME:VALUE")
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--skip", type=int, default=400, help="first AlpacaEval prompt (past calibration's)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--weights", default="", help="medusa generate's --weights (default: its own, auto)")
    p.add_argument("--json-out", help="also write the medians per tree here")
    args = p.parse_args()
    args.other_heads = dict(h.split("=", 1) for h in args.other_heads)
    trees = [(t.split("=", 1) if "=" in t else (t, t)) for t in args.tree] or [("mc_sim_7b_63", "mc_sim_7b_63")]
    prompts = prompts_file(args.prompts, args.skip, chat=False)
    configs = [("plain", None)] + [(label, value) for label, value in trees]
    samples = {label: [] for label, _ in configs}
    for r in range(args.rounds):
        for label, value in configs:
            samples[label].append(run_config(args, prompts, value))
            print(f"round {r + 1}/{args.rounds} {label}: {samples[label][-1]['tokens_per_second']:.1f} tok/s",
                  file=sys.stderr)
    plain = samples["plain"]
    rows, raw = [], {}
    for label, _ in configs:
        runs = samples[label]
        if label != "plain" and any(run["token_ids"] != plain[0]["token_ids"] for run in runs):
            print(f"ERROR: {label} produced other tokens than plain decoding", file=sys.stderr)
            sys.exit(1)
        overhead = statistics.median(run["step_ms"] / base["step_ms"] for run, base in zip(runs, plain))
        speedup = statistics.median(run["tokens_per_second"] / base["tokens_per_second"]
                                    for run, base in zip(runs, plain))
        accel = runs[0]["acceleration"]
        rows.append((label, runs[0]["tree_nodes"], accel, statistics.median(r["step_ms"] for r in runs), overhead,
                     speedup, accel / overhead, statistics.median(r["tokens_per_second"] for r in runs)))
        raw[label] = [{k: v for k, v in run.items() if k != "token_ids"} for run in runs]
    print(f"{args.prompts} AlpacaEval prompts from #{args.skip}, chat, greedy, max {args.max_tokens} tokens, "
          f"{args.threads} threads, medians of {args.rounds} alternating rounds; "
          f"{plain[0]['new_tokens']} tokens per round\n")
    print("| tree | nodes | acceleration | step ms | overhead | speedup | accel/overhead | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for label, nodes, accel, step, overhead, speedup, predicted, tps in rows:
        print(f"| {label} | {nodes} | {accel:.2f} | {step:.1f} | {overhead:.2f} | {speedup:.2f}x | {predicted:.2f} "
              f"| {tps:.1f} |")
    print("\n" + json.dumps(raw))
    if args.json_out:
        write_json(args, rows)
    os.unlink(prompts)


def write_json(args, rows):
    plain_tps = rows[0][7]
    trees = [{"tree": label, "nodes": nodes, "tokens_per_second": tps, "plain_tokens_per_second": plain_tps,
              "speedup": speedup, "tokens_per_step": accel, "step_ms": step, "overhead": overhead}
             for label, nodes, accel, step, overhead, speedup, _, tps in rows]
    result = {"machine": machine(), "threads": args.threads, "weights": args.weights or "auto",
              "prompts": args.prompts, "max_tokens": args.max_tokens, "rounds": args.rounds, "trees": trees}
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
