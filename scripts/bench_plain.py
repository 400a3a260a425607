#!/usr/bin/env python3
"""Plain decoding and prefill speed, this engine vs llama.cpp, side by side.

Runs, in alternation for --rounds rounds (machines are noisy: alternating spreads
the noise over both), on SmolLM2-135M-Instruct at --threads threads:
  - llama.cpp's llama-bench: prefill of --prompt tokens (pp) and decode of --gen
    tokens (tg), on the F32 GGUF (the precision this engine computes in) and on
    the original Q4_1 GGUF (llama.cpp computes with 4-bit weights there);
  - this engine's cpu_backend_bench on the Q4_1 file in each --weights mode (f32: dequantized
    at load, the reference; bf16; q8_0: requantized; auto: the file's Q4_1 and Q8_0 blocks):
    the same prefill batch, and decode steps from a one-token context;
  - `medusa generate` end to end in auto mode (sampling, detokenization and streaming included).
Prints medians over rounds as a Markdown table, and the raw samples as JSON (also written to
--json-out, which scripts/plot_benchmarks.py reads).

  python3 scripts/bench_plain.py [--llama-bench PATH] [--rounds 5] [--json-out FILE]
The F32 GGUF is made by scripts/gguf_to_f32.py (needs the `gguf` Python package).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOL = os.path.join(ROOT, "models", "smollm2")
Q41 = os.path.join(SMOL, "SmolLM2-135M-Instruct.Q4_1.gguf")
F32 = os.path.join(SMOL, "SmolLM2-135M-Instruct.F32.gguf")


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def llama_bench(path, model, args):
    out = run([path, "-m", model, "-t", str(args.threads), "-p", str(args.prompt), "-n", str(args.gen),
               "-r", "1", "-o", "jsonl"])
    rates = {}
    for line in out.splitlines():
        rec = json.loads(line)
        kind = "prefill" if rec["n_prompt"] > 0 else "decode"
        rates[kind] = rec["avg_ts"]
    return rates


MODES = ["f32", "bf16", "q8_0", "auto"]


def engine_bench(build, args, mode):
    out = run([os.path.join(build, "bin", "cpu_backend_bench"), "--model", Q41, "--weights", mode,
               "--threads", str(args.threads),
               "--context", "1", "--steps", str(args.gen), "--prefill", str(args.prompt), "--runs", "1",
               "--verify", "1"])
    line = [l for l in out.splitlines() if "decode" in l and "prefill" in l][-1]
    decode = float(line.split("decode ")[1].split(" ")[0])
    prefill = float(line.split("prefill ")[1].split(" ")[0])
    return {"prefill": prefill, "decode": decode}


def medusa_generate(build, args):
    out = run([os.path.join(build, "bin", "medusa"), "generate", "--model", Q41, "--threads", str(args.threads),
               "--chat", "--prompt", "Write a story about a lighthouse keeper.", "--max-tokens", str(args.gen),
               "--ignore-eos", "--json"])
    rec = json.loads(out)
    return {"prefill": rec["prefill_tokens_per_second"], "decode": rec["tokens_per_second"],
            "prompt_tokens": rec["prompt_tokens"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH"),
                   help="llama.cpp's llama-bench (or $LLAMA_BENCH); see scripts/bench_llamacpp.sh for building it")
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json-out", help="also write the medians and samples here")
    args = p.parse_args()
    if not args.llama_bench or not os.access(args.llama_bench, os.X_OK):
        sys.exit("give llama.cpp's llama-bench with --llama-bench PATH or LLAMA_BENCH=PATH")
    if not os.path.exists(F32):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gguf_to_f32.py"), Q41, F32], check=True)

    samples = {"llama.cpp F32": [], "llama.cpp Q4_1": []}
    samples.update({f"medusa-serve --weights {m}": [] for m in MODES})
    samples["medusa generate end to end (auto)"] = []
    for r in range(args.rounds):
        samples["llama.cpp F32"].append(llama_bench(args.llama_bench, F32, args))
        for m in MODES:
            samples[f"medusa-serve --weights {m}"].append(engine_bench(args.build, args, m))
        samples["llama.cpp Q4_1"].append(llama_bench(args.llama_bench, Q41, args))
        samples["medusa generate end to end (auto)"].append(medusa_generate(args.build, args))
        print(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)

    med = {k: {m: statistics.median(s[m] for s in v) for m in ("prefill", "decode")} for k, v in samples.items()}
    base = med["llama.cpp Q4_1"]
    print(f"| engine ({args.threads} threads) | prefill tok/s | decode tok/s | prefill vs llama.cpp Q4_1 "
          f"| decode vs llama.cpp Q4_1 |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['prefill']:.0f} | {m['decode']:.1f} | {m['prefill'] / base['prefill']:.2f}x "
              f"| {m['decode'] / base['decode']:.2f}x |")
    print(json.dumps(samples))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"threads": args.threads, "prompt": args.prompt, "gen": args.gen, "medians": med,
                       "samples": samples}, f, indent=1)


if __name__ == "__main__":
    main()
