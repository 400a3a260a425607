#!/usr/bin/env bash
# Runs the test suite: sets up (packages, build, model fixtures; each skipped
# when already done), then every CTest test. Extra arguments go to ctest
# (e.g. -L unit, -R Tokenizer).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
"$ROOT/scripts/setup.sh"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" "$@"
