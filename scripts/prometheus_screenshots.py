#!/usr/bin/env python3
"""Screenshots of the dashboard's queries graphed in Prometheus' own UI (docs/images/*.png).

No Grafana server is available on the development machines, so the picture of the dashboard's
data is Prometheus' /graph page: a real medusa-server (SmolLM2-135M-Instruct with its shipped
heads) scraped every second by a real Prometheus with the recording rules loaded, through
`medusa bench` rounds with and without Medusa, then headless Chromium on /graph with the
dashboard's expressions. A docs artifact, not a test.

  apt-get install -y chromium
  build/pytools/bin/python scripts/prometheus_screenshots.py [--rounds 2] [--out docs/images]
"""
import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/deploy"))
import dashboard_check as dc  # noqa: E402  (the server, Prometheus and bench helpers of the e2e check)

def labelled(series):
    """One graph with several of the dashboard's expressions, each series named by a `series` label."""
    return " or ".join(f'label_replace({expr}, "series", "{name}", "", "")' for name, expr in series)


# One graph per picture (Prometheus' page scrolls to the last graph when it holds several).
SHOTS = {
    "prometheus-medusa-speedup.png": labelled([
        ("acceleration", 'pod:medusa_acceleration_rate:ratio_rate1m{pod="$pod"}'),
        ("measured overhead", 'pod:medusa_step_overhead_ratio:avg{pod="$pod"}'),
        ("speedup", 'pod:medusa_speedup:ratio{pod="$pod"}'),
    ]),
    "prometheus-medusa-tokens.png": 'pod:medusa_generated_tokens:rate1m{pod="$pod"}',
    "prometheus-medusa-acceptance.png": 'avg by (position) (pod:medusa_draft_tokens_accepted:ratio_rate1m{pod="$pod"})',
    "prometheus-medusa-step-time.png": (
        'sum by (mode) (rate(medusa_step_duration_seconds_sum{pod="$pod"}[5s]))'
        ' / sum by (mode) (rate(medusa_step_duration_seconds_count{pod="$pod"}[5s]))'),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="bench rounds, each with and without Medusa")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs/images")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="medusa-shots-"))
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join('{"messages": [{"role": "user", "content": "%s"}]}\n' % p for p in dc.BENCH_PROMPTS))
    server = dc.Server([f"--model={dc.SMOLLM2}", f"--heads={dc.SMOLLM2_HEADS}", f"--tree={dc.SMOLLM2_TREE}"],
                       tmp / "server.log")
    prometheus = None
    try:
        server.wait_serving(120)
        prometheus = dc.Prometheus(tmp, server.metrics_port)
        start = time.time()
        for _ in range(args.rounds):
            dc.bench(server, prompts, [])
            dc.bench(server, prompts, ["--no-medusa"])
        time.sleep(5)
        minutes = max(2, int((time.time() - start) / 60) + 1)
        for name, expr in SHOTS.items():
            query = {"g0.expr": expr.replace("$pod", dc.POD), "g0.tab": "0", "g0.range_input": f"{minutes}m"}
            url = f"http://127.0.0.1:{prometheus.port}/graph?" + urllib.parse.urlencode(query)
            target = args.out / name
            argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1000,920", "--virtual-time-budget=15000",
                    f"--screenshot={target}", url]
            subprocess.run(argv, check=True, capture_output=True, timeout=120)
            print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
    finally:
        if prometheus:
            prometheus.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
