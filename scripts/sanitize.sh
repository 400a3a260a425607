#!/usr/bin/env bash
# Sanitizer builds and their tests, CPU only (-DMEDUSA_CUDA=OFF):
#   asan  build-asan: AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer), no
#         recovery; runs the unit tests and the server's validation, capacity, shutdown and
#         fault tests.
#   tsan  build-tsan: ThreadSanitizer; runs the scheduler and server tests.
#   asan-unit  build-asan, the unit tests only (what scripts/test.sh runs with MEDUSA_CI_SANITIZE=1).
#   all   asan and tsan (the default).
# Usage: scripts/sanitize.sh [asan|asan-unit|tsan|all] [extra ctest arguments...]
# Every report, the test programs' and the medusa-server children's alike, is written to
# <build dir>/sanitizer-logs/ (the *SAN_OPTIONS log_path): a run is clean only when every test
# passes and that folder stays empty. Env: MEDUSA_SANITIZE_JOBS (build jobs, default nproc).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-all}
[[ $# -gt 0 ]] && shift
JOBS=${MEDUSA_SANITIZE_JOBS:-$(nproc)}

# Test programs per build (tests/unit/*_test.cc are all unit tests; the CUDA ones are not built).
unit_targets() {
  for f in "$ROOT"/tests/unit/*_test.cc; do
    local name
    name=$(basename "$f" .cc)
    [[ $name == cuda_* ]] || echo "$name"
  done
}
ASAN_TARGETS="$(unit_targets) server_validation_test server_capacity_test server_shutdown_test server_fault_test"
ASAN_TESTS='ServerValidation|ServerRequestText|ServerCapacity|ServerShutdown|ServerFault'
TSAN_TARGETS="block_allocator_test scheduler_test server_batching_test server_capacity_test server_shutdown_test
  server_streaming_test server_validation_test server_prometheus_test server_fault_test"
TSAN_TESTS='BlockAllocator|Scheduler|Server'

# configure_and_build <build dir> <sanitizers> <targets...>
configure_and_build() {
  local dir=$1 sanitize=$2
  shift 2
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  # -O2 keeps the kernels' code paths those of the release build; -g1 gives reports file:line.
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1" -DMEDUSA_CUDA=OFF -DMEDUSA_SANITIZE="$sanitize" "${launcher[@]}" >/dev/null
  local start=$SECONDS
  # shellcheck disable=SC2068
  ninja -C "$dir" -j "$JOBS" medusa-server medusa $@
  echo "sanitize: built $dir in $((SECONDS - start)) s"
}

# run_tests <build dir> <label> <ctest regex or ""> <extra ctest args...>: fails on a failed
# test or on any sanitizer report in the logs folder.
run_tests() {
  local dir=$1 label=$2 regex=$3
  shift 3
  local logs=$dir/sanitizer-logs start=$SECONDS status=0
  rm -rf "$logs" && mkdir -p "$logs"
  export SANITIZER_LOGS=$logs
  local args=(--test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 1800)
  if [[ -n $label ]]; then
    ctest "${args[@]}" -L "$label" "$@" || status=1
  fi
  if [[ -n $regex ]]; then
    # One at a time: each server test runs a model server several times slower than usual.
    ctest "${args[@]}" -j 1 -R "$regex" "$@" || status=1
  fi
  echo "sanitize: tests in $dir took $((SECONDS - start)) s"
  if compgen -G "$logs/*" >/dev/null; then
    echo "sanitize: reports in $logs:"
    for f in "$logs"/*; do
      echo "=== $f"
      head -n 80 "$f"
    done
    status=1
  fi
  return $status
}

# asan <targets> <ctest regex or ""> <extra ctest args...>
asan() {
  local dir=$ROOT/build-asan targets=$1 regex=$2
  shift 2
  # shellcheck disable=SC2086
  configure_and_build "$dir" address,undefined $targets
  local logs=$dir/sanitizer-logs
  # handle_sigbus=0: the engine's own SIGBUS guard (engine/model/mapped_file.cc) forwards a
  # SIGBUS it does not own; without ASan's handler that kills the process, a failure as clear.
  export ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:handle_sigbus=0"
  export UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1"
  export LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitizers/lsan.supp:print_suppressions=0"
  run_tests "$dir" unit "$regex" "$@"
}

tsan() {
  local dir=$ROOT/build-tsan
  # shellcheck disable=SC2086
  configure_and_build "$dir" thread $TSAN_TARGETS
  local logs=$dir/sanitizer-logs
  export TSAN_OPTIONS="log_path=$logs/tsan:suppressions=$ROOT/scripts/sanitizers/tsan.supp:second_deadlock_stack=1:print_suppressions=0"
  # libgomp and OpenBLAS are not built with TSan: their threads' synchronization is invisible to
  # it. One thread each keeps every parallel region on the calling thread (the engine's own
  # thread pool, which TSan sees, still runs).
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  run_tests "$dir" "" "$TSAN_TESTS" "$@"
}

case $MODE in
  asan) asan "$ASAN_TARGETS" "$ASAN_TESTS" "$@" ;;
  asan-unit) asan "$(unit_targets)" "" "$@" ;;
  tsan) tsan "$@" ;;
  all)
    status=0
    asan "$ASAN_TARGETS" "$ASAN_TESTS" "$@" || status=1
    tsan "$@" || status=1
    exit $status
    ;;
  *)
    echo "usage: $0 [asan|asan-unit|tsan|all] [ctest arguments...]" >&2
    exit 2
    ;;
esac
