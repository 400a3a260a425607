#!/usr/bin/env python3
"""Two builds of medusa-serve side by side, a change's before and after: `medusa generate`
decode tokens/s plainly and with Medusa (the shipped heads, --tree auto), and medusa-server
under `medusa bench` (Medusa on) at each --concurrency. The builds alternate round by round
in ABBA order, so machine noise falls on both alike.

  python3 scripts/bench_before_after.py --before OTHER_CHECKOUT/build --after build \\
      [--rounds 4] [--prompts 8] [--max-tokens 128] [--concurrency 1,4] [--threads 2]

Both builds run the models and heads of this checkout (models/, heads/). Prints a Markdown
table of medians over rounds with the median per-round after/before ratio, whether both
builds generated the same tokens, and the raw numbers as JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from bench_common import HEADS, ROOT, SMOL, free_port, prompts_file, wait_serving


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def generate(build, prompts, args, medusa_on):
    cmd = [os.path.join(build, "bin", "medusa"), "generate", "--model", SMOL, "--prompts", prompts,
           "--max-tokens", str(args.max_tokens), "--threads", str(args.threads), "--json"]
    if medusa_on:
        cmd += ["--heads", HEADS, "--tree", "auto"]
    records = [json.loads(line) for line in run(cmd).splitlines() if line.strip()]
    tokens = sum(r["new_tokens"] - 1 for r in records)  # decoding passes' tokens
    seconds = sum(r["decode_seconds"] for r in records)
    return {"tok_s": tokens / seconds, "ids": [r["token_ids"] for r in records],
            "tokens_per_step": sum(r["new_tokens"] for r in records) / sum(r["steps"] for r in records)}


def serve_and_bench(build, prompts, args):
    port, metrics_port = free_port(), free_port()
    addr = f"127.0.0.1:{port}"
    server = subprocess.Popen([os.path.join(build, "bin", "medusa-server"), "--model", SMOL, "--heads", HEADS,
                               "--tree", "auto", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
                               str(metrics_port), "--threads", str(args.threads), "--max-running",
                               str(max(args.levels)), "--kv-cache-mb", "1024", "--log-level", "warn"],
                              stderr=subprocess.DEVNULL)
    medusa = os.path.join(build, "bin", "medusa")
    try:
        wait_serving(addr, build)
        results = {}
        for c in args.levels:
            out = run([medusa, "bench", "--addr", addr, "--prompts", prompts, "--concurrency", str(c), "--requests",
                       str(max(args.prompts, c)), "--max-tokens", str(args.max_tokens), "--json"])
            results[c] = json.loads(out)["tokens_per_second"]
        return results
    finally:
        server.terminate()
        server.wait(timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="build folder of the code before the change")
    p.add_argument("--after", default=os.path.join(ROOT, "build"))
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", type=int, default=400, help="first AlpacaEval prompt (past calibration's)")
    args = p.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    prompts = prompts_file(args.prompts, args.skip)
    builds = {"before": args.before, "after": args.after}
    samples = {name: [] for name in builds}
    ids = {}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for name in order:
            plain = generate(builds[name], prompts, args, medusa_on=False)
            medusa = generate(builds[name], prompts, args, medusa_on=True)
            served = serve_and_bench(builds[name], prompts, args)
            ids.setdefault(name, (plain["ids"], medusa["ids"]))
            samples[name].append({"generate plain": plain["tok_s"], "generate Medusa": medusa["tok_s"],
                                  "tokens/step": medusa["tokens_per_step"],
                                  **{f"server c={c}": served[c] for c in args.levels}})
            print(f"round {r + 1} {name}: {samples[name][-1]}", file=sys.stderr)
    os.unlink(prompts)

    metrics = list(samples["before"][0].keys())
    print(f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads, {args.prompts} AlpacaEval chat prompts from "
          f"#{args.skip}, greedy, {args.max_tokens} tokens; decode tokens/s (server: `medusa bench`, Medusa on, "
          f"--tree auto); medians of {args.rounds} ABBA rounds\n")
    print("| measure | before | after | after / before |")
    print("|---|---|---|---|")
    for m in metrics:
        b = [s[m] for s in samples["before"]]
        a = [s[m] for s in samples["after"]]
        ratio = statistics.median(x / y for x, y in zip(a, b))
        print(f"| {m} | {statistics.median(b):.2f} | {statistics.median(a):.2f} | {ratio:.3f} |")
    same = ids["before"] == ids["after"]
    print(f"\nidentical tokens from both builds (plain and Medusa): {same}")
    print("\n" + json.dumps(samples))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
