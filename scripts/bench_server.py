#!/usr/bin/env python3
"""medusa-server under load: `medusa bench` at several concurrencies, Medusa on and off.

Starts one medusa-server (SmolLM2-135M-Instruct with the shipped heads, --tree auto, so the
trees are those measured for this machine) on free loopback ports, waits until it serves,
then for each concurrency runs `medusa bench --json` with Medusa on and off, alternating
the two in ABBA order over --rounds rounds so machine noise falls on both alike. Each bench sends
--requests-per-stream requests per concurrent stream (chat prompts from AlpacaEval, past the
ones calibration used; greedy, so both modes produce the same text). Then, for the
server-overhead check, `medusa client` at concurrency 1 against `medusa generate` in-process on
the same prompts, paired request by request (decode tokens/s of each request, from the usage
the server reports vs the JSON generate prints).

  python3 scripts/bench_server.py [--concurrency 1,2,4,8,16] [--rounds 4] [--max-tokens 128]
                                  [--generate-prompts 8] [--overhead-rounds 4]
  python3 scripts/bench_server.py --concurrency "" --overhead-rounds 6    # the overhead check only
  python3 scripts/bench_server.py --overhead-rounds 0 --json-out docs/benchmarks/server.json  # for the plot
  python3 scripts/bench_server.py --server-arg=--lookup-tokens=2 ...   # more medusa-server flags

Prints a Markdown table (medians over rounds) and the raw results as JSON. --json-out also writes
the medians per concurrency and mode, which scripts/plot_benchmarks.py reads:
  {"machine", "threads", "tree", "max_tokens", "rounds",
   "runs": [{"medusa", "concurrency", "tokens_per_second", "samples", "tokens_per_step", ...}]}
--overhead-rounds 0 skips the server-vs-generate check.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench_common import HEADS, ROOT, SMOL, free_port, machine, prompts_file, wait_serving


def medusa(args, *extra):
    cmd = [os.path.join(args.build, "bin", "medusa"), *extra]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--model", default=SMOL)
    p.add_argument("--heads", default=HEADS)
    p.add_argument("--tree", default="auto")
    p.add_argument("--concurrency", default="1,2,4,8,16")
    p.add_argument("--requests-per-stream", type=int, default=2)
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", type=int, default=400, help="first AlpacaEval prompt (past calibration's)")
    p.add_argument("--generate-prompts", type=int, default=8, help="prompts of the server-vs-generate check")
    p.add_argument("--overhead-rounds", type=int, default=4, help="rounds of the server-vs-generate check; 0: none")
    p.add_argument("--json-out", help="also write the medians per concurrency and mode here")
    p.add_argument("--server-arg", action="append", default=[],
                   help="one more medusa-server flag, e.g. --server-arg=--lookup-tokens=2; repeatable")
    args = p.parse_args()
    if args.server_arg and args.overhead_rounds > 0:
        p.error("--server-arg changes only the server: give --overhead-rounds 0 (the check compares it with generate)")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]  # empty: only the overhead check
    prompts = prompts_file(max(max(levels, default=1) * args.requests_per_stream, args.min_requests, args.generate_prompts),
                           args.skip)
    port, metrics_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile("w+", prefix="medusa-server.", suffix=".log", delete=False)
    addr = f"127.0.0.1:{port}"
    server = subprocess.Popen([os.path.join(args.build, "bin", "medusa-server"), "--model", args.model, "--heads",
                               args.heads, "--tree", args.tree, "--port", str(port), "--metrics-port",
                               str(metrics_port), "--host", "127.0.0.1", "--threads", str(args.threads),
                               "--max-running", str(max(levels, default=1)), "--max-waiting", "256", "--kv-cache-mb", "1024",
                               *args.server_arg],
                              stdout=log, stderr=log, text=True)
    try:
        try:
            wait_serving(addr, args.build)
        except SystemExit:
            print(open(log.name).read()[-4000:], file=sys.stderr)
            raise
        samples = {(c, m): [] for c in levels for m in (True, False)}
        for r in range(args.rounds):
            for c in levels:
                # ABBA order: Medusa first in even rounds, plain first in odd ones, so neither
                # mode always runs right after the other level's load.
                for medusa_on in ((True, False) if r % 2 == 0 else (False, True)):
                    requests = max(c * args.requests_per_stream, args.min_requests)
                    extra = ["bench", "--addr", addr, "--prompts", prompts, "--concurrency", str(c), "--requests",
                             str(requests), "--max-tokens", str(args.max_tokens), "--json"]
                    if not medusa_on:
                        extra.append("--no-medusa")
                    res = json.loads(medusa(args, *extra))
                    samples[(c, medusa_on)].append(res)
                    print(f"round {r + 1} concurrency {c} medusa {medusa_on}: {res['tokens_per_second']:.1f} tok/s, "
                          f"{res['acceleration_rate']:.2f} tokens/step", file=sys.stderr)

        # Server vs in-process at concurrency 1, same prompts, paired request by request:
        # prompt i through the server, then through `medusa generate` (the order flips
        # every pair), so the two halves of a pair are seconds apart and this VM's slow
        # drifts (rates swing by a third over minutes) fall on both alike.
        singles = [prompts_file(1, args.skip + i) for i in range(args.generate_prompts)]
        served, local = [], []

        def served_run(f):
            out = medusa(args, "client", "--addr", addr, "--prompts", f, "--max-tokens", str(args.max_tokens),
                         "--json")
            return json.loads(out.splitlines()[0])

        def local_run(f):
            out = medusa(args, "generate", "--model", args.model, "--heads", args.heads, "--tree", args.tree,
                         "--prompts", f, "--max-tokens", str(args.max_tokens), "--threads", str(args.threads),
                         "--json")
            return json.loads(out.splitlines()[0])

        for r in range(args.overhead_rounds):
            for i, f in enumerate(singles):
                if (r + i) % 2 == 0:
                    served.append(served_run(f))
                    local.append(local_run(f))
                else:
                    local.append(local_run(f))
                    served.append(served_run(f))
        for f in singles:
            os.unlink(f)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        os.unlink(log.name)

    def median(values):
        return statistics.median(values)

    print(f"SmolLM2-135M-Instruct, heads {os.path.basename(args.heads)}, --tree {args.tree}, {args.threads} threads; "
          f"greedy chat prompts (AlpacaEval from #{args.skip}), max {args.max_tokens} tokens; "
          f"medians of {args.rounds} alternating rounds\n")
    print("| concurrency | Medusa tok/s | plain tok/s | Medusa / plain | tokens/step | TTFT p50/p99 ms (Medusa) "
          "| ITL p50/p99 ms (Medusa) | ITL p50/p99 ms (plain) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in levels:
        on, off = samples[(c, True)], samples[(c, False)]
        ratio = median(a["tokens_per_second"] / b["tokens_per_second"] for a, b in zip(on, off))
        print(f"| {c} | {median(s['tokens_per_second'] for s in on):.1f} | "
              f"{median(s['tokens_per_second'] for s in off):.1f} | {ratio:.2f}x | "
              f"{median(s['acceleration_rate'] for s in on):.2f} | "
              f"{median(s['ttft_ms_p50'] for s in on):.0f} / {median(s['ttft_ms_p99'] for s in on):.0f} | "
              f"{median(s['itl_ms_p50'] for s in on):.1f} / {median(s['itl_ms_p99'] for s in on):.1f} | "
              f"{median(s['itl_ms_p50'] for s in off):.1f} / {median(s['itl_ms_p99'] for s in off):.1f} |")

    if args.json_out:
        write_json(args, levels, samples)
    os.unlink(prompts)
    if not served:
        return

    def decode_rate(run):
        return (run["new_tokens"] - 1) / run["decode_seconds"]
    same = all(a["token_ids"] == b["token_ids"] for a, b in zip(served, local))
    srv, loc = [decode_rate(r) for r in served], [decode_rate(r) for r in local]
    pairs = [a / b for a, b in zip(srv, loc)]
    # Both sides decode the same tokens, so the pooled rate ratio is a ratio of decode times.
    pooled = sum(r["decode_seconds"] for r in local) / sum(r["decode_seconds"] for r in served)
    q = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0]] * 3
    print(f"\nconcurrency 1, {len(pairs)} request pairs ({args.generate_prompts} prompts x {args.overhead_rounds} "
          f"rounds): server {median(srv):.1f} tok/s, in-process `medusa generate` {median(loc):.1f} tok/s; "
          f"server / generate per pair: median {median(pairs):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}), "
          f"all tokens pooled {pooled:.3f}; identical tokens: {same}")
    raw = {f"{c}/{'medusa' if m else 'plain'}": v for (c, m), v in samples.items()}
    raw["server_decode_tok_s"], raw["generate_decode_tok_s"] = srv, loc
    print("\n" + json.dumps(raw))


def write_json(args, levels, samples):
    runs = []
    for c in levels:
        for medusa_on in (True, False):
            s = samples[(c, medusa_on)]
            runs.append({"medusa": medusa_on, "concurrency": c,
                         "tokens_per_second": statistics.median(r["tokens_per_second"] for r in s),
                         "samples": [r["tokens_per_second"] for r in s],
                         "tokens_per_step": statistics.median(r["acceleration_rate"] for r in s),
                         "ttft_ms_p50": statistics.median(r["ttft_ms_p50"] for r in s),
                         "itl_ms_p50": statistics.median(r["itl_ms_p50"] for r in s)})
    result = {"machine": machine(), "threads": args.threads, "tree": args.tree, "max_tokens": args.max_tokens,
              "rounds": args.rounds, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
