#!/usr/bin/env bash
# Runs the test suite: sets up (packages, build, model fixtures; each skipped
# when already done), then every CTest test. Extra arguments go to ctest
# (e.g. -L unit, -R Tokenizer). With MEDUSA_CI_SANITIZE=1 it then also builds the
# unit tests with ASan+UBSan (build-asan) and runs them (scripts/sanitize.sh asan-unit;
# BENCHMARKS.md has what that costs on 2 cores).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/setup.sh"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
if [[ ${MEDUSA_CI_SANITIZE:-0} == 1 ]]; then
  "$ROOT/scripts/sanitize.sh" asan-unit
fi
