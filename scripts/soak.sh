#!/usr/bin/env bash
# A long soak run of medusa-server (tests/integration/server_soak_test.cc, which CI runs for
# 40 s): well-behaved clients, a deadline storm, 4x overload bursts, killed client processes
# and stalled readers at once, then SIGTERM under load. Prints the test's JSON summary: RSS
# slope, status histograms, p99 time to reject, drain time, inter-token latency.
# Usage: scripts/soak.sh [--minutes N] [--report FILE]   (default 30 minutes)
# Builds what it needs in $MEDUSA_BUILD_DIR (default build/), which must be configured.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
MINUTES=30
REPORT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) MINUTES=$2; shift 2 ;;
    --report) REPORT=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--report FILE]" >&2; exit 2 ;;
  esac
done
[[ $MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "soak: --minutes takes a number, got '$MINUTES'" >&2; exit 2; }
[[ -f $BUILD_DIR/build.ninja ]] || { echo "soak: $BUILD_DIR is not configured (run scripts/setup.sh)" >&2; exit 2; }

ninja -C "$BUILD_DIR" medusa-server medusa server_soak_test >/dev/null
SECONDS_TOTAL=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
[[ -n $REPORT ]] || REPORT=$(mktemp --suffix=.json)
echo "soak: $MINUTES minutes against $BUILD_DIR/bin/medusa-server; report in $REPORT" >&2
status=0
MEDUSA_SOAK_SECONDS=$SECONDS_TOTAL MEDUSA_SOAK_REPORT=$REPORT \
  "$BUILD_DIR/bin/server_soak_test" --gtest_filter='ServerSoakTest.*' || status=$?
if [[ -s $REPORT ]]; then
  python3 - "$REPORT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"RSS: baseline {r['rss_mib_baseline']:.1f} MiB, end {r['rss_mib_end']:.1f}, max {r['rss_mib_max']:.1f}, "
      f"slope {r['rss_slope_mib_per_hour']:.2f} MiB/h over {r['seconds']:.0f} s ({r['samples']} samples)")
print(f"threads: baseline {r['threads_baseline']}, end {r['threads_end']}, max {r['threads_max']}; "
      f"fds: baseline {r['fds_baseline']}, end {r['fds_end']}, max {r['fds_max']}")
print(f"well-behaved streams {r['steady_streams']}: inter-token latency p50 {r['itl_ms_p50']:.2f} ms, "
      f"p99 {r['itl_ms_p99']:.2f} ms, max {r['itl_ms_max']:.2f} ms")
print(f"overload: {r['rejects']} rejected, time to reject p50 {r['reject_ms_p50']:.2f} ms, p99 {r['reject_ms_p99']:.2f} ms")
print(f"SIGTERM drain: {r['drain_seconds']:.3f} s")
for name, hist in r["statuses"].items():
    print(f"status {name}: {hist}")
EOF
fi
exit $status
