#!/usr/bin/env bash
# Fuzzes the engine's parsers with libFuzzer (tests/fuzz/*_fuzz.cc), one target at a time.
#
#   scripts/fuzz.sh [--minutes N] [--minimize] [target...]
#
# Configures and builds build-fuzz (clang, -fsanitize=fuzzer,address,undefined, no recovery),
# then runs each target (default: all) for N minutes (default 2) on one core over a working
# copy of its committed corpus, tests/fuzz/corpus/<target>/, and merges the inputs that found
# new edges back into it (-merge=1); in fork mode, so a crash does not end the run.
# --minimize instead rewrites each committed corpus as the smallest set of its inputs that
# reaches the same edges (files named fixed-*, reproducers of fixed crashes, are kept). A crash, leak, timeout (10 s) or
# out-of-memory (2 GiB) input is saved as tests/fuzz/crashes/<target>/<kind>-<sha1>; the
# script goes on with the next target and exits 1 at the end. Prints, per target, the
# executions, executions per second, coverage (libFuzzer's cov: edges, ft: features), the
# corpus before and after, and the crashes.
# Needs clang-14 and libclang-rt-14-dev (libFuzzer, sanitizers). The normal build replays the
# committed corpora as CTest tests (label `fuzz`): ctest --test-dir build -L fuzz.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${MEDUSA_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
MINUTES=2
MINIMIZE=0
TARGETS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --minimize) MINIMIZE=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  for src in "$ROOT"/tests/fuzz/*_fuzz.cc; do TARGETS+=("$(basename "$src" .cc)"); done
fi
for target in "${TARGETS[@]}"; do
  [[ -f "$ROOT/tests/fuzz/$target.cc" ]] || { echo "fuzz.sh: no target $target (tests/fuzz/$target.cc)" >&2; exit 2; }
done

# The whole build is instrumented for coverage and sanitizers; the targets alone link libFuzzer.
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DMEDUSA_FUZZ=ON -DMEDUSA_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
    "-DCMAKE_C_FLAGS=$SAN" "-DCMAKE_CXX_FLAGS=$SAN" "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" \
    $(command -v ccache >/dev/null && echo -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
elif ! grep -q '^MEDUSA_FUZZ:BOOL=ON' "$BUILD/CMakeCache.txt"; then
  cmake -DMEDUSA_FUZZ=ON "$BUILD"
fi
ninja -C "$BUILD" "${TARGETS[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
LIMITS=(-rss_limit_mb=2048 -timeout=10)
SUMMARY=()
FAILED=0
for target in "${TARGETS[@]}"; do
  corpus=$ROOT/tests/fuzz/corpus/$target
  crashes=$ROOT/tests/fuzz/crashes/$target
  work=$BUILD/fuzz-work/$target
  log=$BUILD/fuzz-work/$target.log
  mkdir -p "$corpus" "$crashes"
  rm -rf "$work" && mkdir -p "$work"
  before=$(find "$corpus" -type f | wc -l)
  if [[ $MINIMIZE -eq 1 ]]; then
    echo "== $target: minimizing $corpus"
    "$BUILD/bin/$target" -merge=1 -use_counters=0 "${LIMITS[@]}" "$work" "$corpus" > "$log" 2>&1
    cp "$corpus"/fixed-* "$work"/ 2>/dev/null || true  # reproducers of fixed crashes stay, whatever they cover
    rm -f "$corpus"/* && cp "$work"/* "$corpus"/
    SUMMARY+=("$(printf '%-24s corpus %d -> %d files (%s KB)' "$target" "$before" "$(find "$corpus" -type f | wc -l)" \
                 "$(du -s --apparent-size --block-size=1K "$corpus" | cut -f1)")")
    continue
  fi
  cp "$corpus"/. "$work"/ -r
  touch "$log.start"
  echo "== $target: $MINUTES min over $before inputs (log: $log)"
  # Fork mode (one job at a time) goes on after a crash, so one bug does not end the run;
  # each crashing input is saved under $crashes.
  "$BUILD/bin/$target" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time=$((MINUTES * 60)) "${LIMITS[@]}" -artifact_prefix="$crashes/" "$work" > "$log" 2>&1 || true
  # Inputs that reached new edges join the committed corpus (-use_counters=0: edges, not hit
  # counts, keeps it small; crashing inputs never do).
  "$BUILD/bin/$target" -merge=1 -use_counters=0 "${LIMITS[@]}" "$corpus" "$work" > "$log.merge" 2>&1 || true
  # Fork mode's progress lines: "#EXECS: cov: C ft: F corp: N exec/s R oom/timeout/crash: O/T/X time: Ss ...".
  last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -1 || true)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<< "$last")
  seconds=$(grep -oE 'time: [0-9]+s' <<< "$last" | grep -oE '[0-9]+' || true)
  rate=$([[ -n "$execs" && "${seconds:-0}" -gt 0 ]] && echo $((execs / seconds)) || echo '?')
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<< "$last" || true)
  failures=$(grep -oE 'oom/timeout/crash: [0-9]+/[0-9]+/[0-9]+' <<< "$last" | cut -d' ' -f2 || true)
  line=$(printf '%-24s %10s execs %6s exec/s  %-22s oom/timeout/crash %-7s corpus %d -> %d files (%s KB)' "$target" \
           "${execs:-?}" "$rate" "${cov:-cov: ? ft: ?}" "${failures:-?}" "$before" "$(find "$corpus" -type f | wc -l)" \
           "$(du -s --apparent-size --block-size=1K "$corpus" | cut -f1)")
  if [[ -n "$failures" && "$failures" != "0/0/0" ]] || [[ -z "$last" ]]; then
    FAILED=1
    while read -r artifact; do
      line+=$'\n'"    FOUND: $artifact"
    done < <(find "$crashes" -type f -newer "$log.start" | sort)
    summary=$(grep -m3 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|invariant broken|terminate called" \
              "$log" | sort -u || true)
    [[ -n "$summary" ]] && line+=$'\n'"$(sed 's/^/    /' <<< "$summary")"
  fi
  SUMMARY+=("$line")
  echo "$line"
done

echo
echo "== summary ($MINUTES min per target, one core, $(date -u +%FT%TZ))"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
