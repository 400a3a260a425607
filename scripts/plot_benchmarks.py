#!/usr/bin/env python3
"""Plots of the benchmark results, as PNGs for BENCHMARKS.md.

Reads the JSON files the benchmark scripts write to docs/benchmarks/ and writes one PNG per
plot to docs/images/benchmarks/ (created if missing). A plot whose JSON is missing is skipped
with a message.

  input (docs/benchmarks/)       made by                                   output (docs/images/benchmarks/)
  plain.json                     scripts/bench_plain.py --json-out          plain_tokens_per_second.png
  verify.json                    scripts/bench_verify.py                    verify_forward_ms.png
  medusa*.json (one run, or a    scripts/bench_medusa.py --json-out         medusa_speedup.png
    list of runs, per file)        (one file per --weights mode)
  server.json                    scripts/bench_server.py --json-out         server_tokens_per_second.png
  heads_data_curve.json          scripts/heads_data_curve.py --json-out     heads_accuracy_vs_data.png

  python3 scripts/plot_benchmarks.py [--in-dir docs/benchmarks] [--out-dir docs/images/benchmarks]

Needs matplotlib (`pip install matplotlib`), which is not one of the project's test dependencies.
"""
import argparse
import glob
import json
import os
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("plot_benchmarks.py needs matplotlib: pip install matplotlib")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA_COLOR, OURS_COLOR = "tab:gray", "tab:blue"
MODE_COLORS = {"f32": "tab:blue", "bf16": "tab:orange", "q8_0": "tab:green", "auto": "tab:red"}


def shown(path):
    """path relative to the repository when inside it."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def load(path):
    if not os.path.exists(path):
        print(f"skipped: {shown(path)} is missing", file=sys.stderr)
        return None
    with open(path) as f:
        return json.load(f)


def subtitle(data, extra=""):
    parts = [data.get("machine"), f"{data['threads']} threads" if "threads" in data else None, extra]
    return ", ".join(p for p in parts if p)


def finish(fig, title, sub, out):
    height = fig.get_figheight()  # the title lines take the top 0.65 inch (laid out after the axes)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.65 / height))
    fig.suptitle(title, y=1 - 0.12 / height, va="top", fontsize=13, fontweight="bold")
    if sub:
        fig.text(0.5, 1 - 0.42 / height, sub, ha="center", va="top", fontsize=9, color="dimgray")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {shown(out)}", file=sys.stderr)


def plot_plain(in_dir, out_dir):
    """(1) Prefill and decode tokens/s per engine and weights mode, against llama.cpp."""
    data = load(os.path.join(in_dir, "plain.json"))
    if data is None:
        return
    engines = list(data["medians"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.5 * len(engines) + 2.5), sharey=True)
    for ax, kind in zip(axes, ("decode", "prefill")):
        med = [data["medians"][e][kind] for e in engines]
        lo = [m - min(s[kind] for s in data["samples"].get(e, [{kind: m}])) for e, m in zip(engines, med)]
        hi = [max(s[kind] for s in data["samples"].get(e, [{kind: m}])) - m for e, m in zip(engines, med)]
        colors = [LLAMA_COLOR if e.startswith("llama.cpp") else OURS_COLOR for e in engines]
        y = range(len(engines))
        ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3, error_kw={"elinewidth": 1})
        for yi, m, h in zip(y, med, hi):
            ax.text(m + h, yi, f"  {m:.0f}", va="center", ha="left", fontsize=8)
        ax.set_yticks(list(y), engines)
        ax.invert_yaxis()
        tokens = data.get("gen" if kind == "decode" else "prompt")
        ax.set_title(f"{kind}" + (f" ({tokens} tokens)" if tokens else ""))
        ax.set_xlabel("tokens/s (median; whiskers: min-max over rounds)")
        ax.grid(axis="x", alpha=0.3)
        if kind == "decode" and "llama.cpp Q4_1" in data["medians"]:
            goal = 2 * data["medians"]["llama.cpp Q4_1"]["decode"]
            ax.axvline(goal, color="tab:red", linestyle="--", label=f"goal: 2x llama.cpp Q4_1 ({goal:.0f} tok/s)")
        ax.margins(x=0.15)
    handles = [plt.Rectangle((0, 0), 1, 1, color=LLAMA_COLOR, label="llama.cpp"),
               plt.Rectangle((0, 0), 1, 1, color=OURS_COLOR, label="medusa-serve")]
    handles += axes[0].get_legend_handles_labels()[0]
    axes[0].legend(handles=handles, loc="lower right", fontsize=8)
    finish(fig, "Plain decoding and prefill: medusa-serve weight modes vs llama.cpp (SmolLM2-135M, batch 1)",
           subtitle(data, f"medians of {len(next(iter(data['samples'].values()), []))} rounds"),
           os.path.join(out_dir, "plain_tokens_per_second.png"))


def plot_verify(in_dir, out_dir):
    """(2) Time of one forward of T tokens (a Medusa verification step) per weights mode."""
    data = load(os.path.join(in_dir, "verify.json"))
    if data is None:
        return
    fig, (ax_ms, ax_rel) = plt.subplots(1, 2, figsize=(12, 5))
    for mode, m in data["modes"].items():
        color = MODE_COLORS.get(mode)
        sizes, med = m["sizes"], m["ms_median"]
        lo = [min(s) for s in m["ms_samples"]]
        hi = [max(s) for s in m["ms_samples"]]
        ax_ms.plot(sizes, med, marker="o", color=color, label=f"--weights {mode}")
        ax_ms.fill_between(sizes, lo, hi, color=color, alpha=0.15)
        base = med[sizes.index(1)] if 1 in sizes else med[0]
        ax_rel.plot(sizes, [v / base for v in med], marker="o", color=color, label=f"--weights {mode}")
    sizes = sorted({t for m in data["modes"].values() for t in m["sizes"]})
    ax_rel.plot(sizes, [t / sizes[0] for t in sizes], color="lightgray", linestyle=":", label="proportional to T")
    for ax in (ax_ms, ax_rel):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(t) for t in sizes])
        ax.set_xlabel("tokens verified in one forward, T (tree nodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_ms.set_ylabel("ms per forward (median; band: min-max)")
    ax_ms.set_title("forward time")
    ax_rel.set_yscale("log", base=2)
    ax_rel.set_ylabel("forward time / time at T=1 (plain decode step)")
    ax_rel.set_title("relative to one plain decode step")
    context = data.get("context")
    finish(fig, "The cost of Medusa verification: one forward of T tokens (SmolLM2-135M)",
           subtitle(data, (f"after {context} cached tokens, " if context else "")
                    + f"medians of {data.get('rounds', '?')} rounds"),
           os.path.join(out_dir, "verify_forward_ms.png"))


def plot_medusa(in_dir, out_dir):
    """(3) Medusa's wall-clock speedup over plain decoding against tree size, per weights mode."""
    paths = sorted(glob.glob(os.path.join(in_dir, "medusa*.json")))
    if not paths:
        print(f"skipped: no {shown(os.path.join(in_dir, 'medusa*.json'))}", file=sys.stderr)
        return
    runs = []
    for path in paths:
        data = load(path)
        runs += data if isinstance(data, list) else [data]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for run in runs:
        trees = sorted(run["trees"], key=lambda t: t["nodes"])
        mode = run.get("weights", "auto")
        nodes, speedup = [t["nodes"] for t in trees], [t["speedup"] for t in trees]
        line, = ax.plot(nodes, speedup, marker="o", color=MODE_COLORS.get(mode), label=f"--weights {mode}")
        for t in trees:
            if t["tree"] != "plain":
                ax.annotate(t["tree"], (t["nodes"], t["speedup"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=line.get_color())
    ax.axhline(1.0, color="black", linewidth=1, label="plain decoding (1.0x)")
    ax.axhline(1.3, color="tab:red", linestyle="--", label="goal (1.3x)")
    ax.set_xscale("log", base=2)
    ticks = sorted({t["nodes"] for run in runs for t in run["trees"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("tree size (nodes, root included)")
    ax.set_ylabel("speedup: tokens/s with Medusa / plain tokens/s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    first = runs[0]
    finish(fig, "Medusa speedup over plain decoding vs tree size (SmolLM2-135M, batch 1, greedy)",
           subtitle(first, f"{first.get('prompts', '?')} prompts x {first.get('max_tokens', '?')} tokens, "
                           f"medians of {first.get('rounds', '?')} rounds"),
           os.path.join(out_dir, "medusa_speedup.png"))


def plot_server(in_dir, out_dir):
    """(4) medusa-server aggregate tokens/s against concurrency, Medusa on and off."""
    data = load(os.path.join(in_dir, "server.json"))
    if data is None:
        return
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for medusa_on, color in ((True, "tab:red"), (False, "tab:blue")):
        runs = sorted((r for r in data["runs"] if r["medusa"] == medusa_on), key=lambda r: r["concurrency"])
        conc = [r["concurrency"] for r in runs]
        med = [r["tokens_per_second"] for r in runs]
        lo = [m - min(r.get("samples", [m])) for r, m in zip(runs, med)]
        hi = [max(r.get("samples", [m])) - m for r, m in zip(runs, med)]
        ax.errorbar(conc, med, yerr=[lo, hi], marker="o", capsize=3, color=color,
                    label=f"Medusa {'on (--tree ' + data.get('tree', 'auto') + ')' if medusa_on else 'off'}")
    levels = sorted({r["concurrency"] for r in data["runs"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("aggregate output tokens/s (median; whiskers: min-max)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    finish(fig, "medusa-server throughput vs concurrency, Medusa on and off (SmolLM2-135M)",
           subtitle(data, f"max {data.get('max_tokens', '?')} tokens per request, "
                          f"medians of {data.get('rounds', '?')} rounds"),
           os.path.join(out_dir, "server_tokens_per_second.png"))


def plot_heads_data_curve(in_dir, out_dir):
    """(5) Held-out top-1 accuracy (heads 0 and 1, and the chain of both) against positions trained on."""
    data = load(os.path.join(in_dir, "heads_data_curve.json"))
    if data is None:
        return
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {"hydra": "tab:red", "medusa": "tab:blue"}
    for head_type in sorted({r["head_type"] for r in data["runs"]}):
        runs = sorted((r for r in data["runs"] if r["head_type"] == head_type), key=lambda r: r["train_rows"])
        rows = [r["train_rows"] for r in runs]
        for series, style, label in (("top1", "-", "head 0 top-1"), ("top1", "--", "head 1 top-1"),
                                     ("chain_top1", ":", "heads 0 and 1 both right")):
            index = 0 if label.startswith("head 0") else 1
            ax.plot(rows, [r[series][index] for r in runs], linestyle=style, marker="o", color=colors[head_type],
                    label=f"{head_type}: {label}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("positions trained on (self-distilled answers, 2 epochs)")
    ax.set_ylabel("held-out accuracy (100 AlpacaEval prompts)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    held_out = data["runs"][0].get("held_out_rows", "?")
    finish(fig, "Heads' held-out accuracy vs training data (SmolLM2-135M, Q4_1)",
           f"2 ResBlocks per head, shared classifier, 2 epochs; held out: 100 AlpacaEval prompts ({held_out} positions)",
           os.path.join(out_dir, "heads_accuracy_vs_data.png"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in-dir", default=os.path.join(ROOT, "docs", "benchmarks"))
    p.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "images", "benchmarks"))
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for plot in (plot_plain, plot_verify, plot_medusa, plot_server, plot_heads_data_curve):
        plot(args.in_dir, args.out_dir)


if __name__ == "__main__":
    main()
