#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run scripts/gpu_check.sh (DEVELOPERS.md, "On a lent
# GPU"): such a machine has CUDA but no gRPC, Abseil or GoogleTest and no network. The pack
# comes in two pieces, each small enough to travel beside the working tree in `run` calls
# (64 MiB in all):
#   core.tar.gz   the GPU tests and benchmark, medusa and medusa-server, the CUDA plugin, the
#                 shared libraries they load that are not the C library's or CUDA's,
#                 stories260K and the AlpacaEval prompts (one call: the checks that need no
#                 SmolLM2 run at once);
#   smol-00, ...  SmolLM2's GGUF (94 MB, incompressible) cut in parts, one call each;
# and a MANIFEST of checksums.
#   scripts/make_devpack.sh [--part-mib 48]
# Writes devpack/ (ignored by git). Needs a CUDA build (scripts/setup.sh where the toolkit is
# installed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
OUT_DIR=$ROOT/devpack
PART_MIB=48
while [ $# -gt 0 ]; do
  case "$1" in
    --part-mib) PART_MIB=$2; shift 2 ;;
    *) echo "make_devpack: unknown option $1" >&2; exit 2 ;;
  esac
done

die() { echo "make_devpack: $*" >&2; exit 1; }

BINARIES=(cuda_kernels_test gpu_backend_test gpu_generation_test gpu_step_bench medusa medusa-server)
PLUGIN=$BUILD_DIR/lib/libmedusa_cuda.so
[ -f "$PLUGIN" ] || die "$PLUGIN is missing: build with the CUDA toolkit installed (scripts/setup.sh)"
cmake --build "$BUILD_DIR" --target "${BINARIES[@]}" medusa_cuda_plugin >/dev/null
for f in models/stories260K/stories260K.bin models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf data/alpaca_eval.json; do
  [ -f "$ROOT/$f" ] || die "$f is missing: run scripts/setup.sh"
done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/models" "$STAGE/data"
for b in "${BINARIES[@]}"; do strip --strip-unneeded -o "$STAGE/bin/$b" "$BUILD_DIR/bin/$b"; done
strip --strip-unneeded -o "$STAGE/lib/libmedusa_cuda.so" "$PLUGIN"

# Shared libraries, except the C library's own (the machine's must serve its kernel) and
# CUDA's (the machine's match its driver).
is_system() {
  case "$(basename "$1")" in
    ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|libutil.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnvidia*) return 0 ;;
  esac
  return 1
}
for f in "$STAGE"/bin/* "$STAGE/lib/libmedusa_cuda.so"; do
  ldd "$f" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  is_system "$lib" || cp -L "$lib" "$STAGE/lib/"
done

cp -r "$ROOT/models/stories260K" "$STAGE/models/"
cp "$ROOT/data/alpaca_eval.json" "$STAGE/data/"

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
tar -C "$STAGE" -cf - . | gzip -6 >"$OUT_DIR/core.tar.gz"
split -b "${PART_MIB}M" -d -a 2 "$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$OUT_DIR/smol-"
{
  echo "commit $(git -C "$ROOT" rev-parse HEAD)"
  (cd "$OUT_DIR" && sha256sum core.tar.gz smol-*)
} >"$OUT_DIR/MANIFEST"
echo "devpack: $OUT_DIR ($(du -sh "$OUT_DIR" | cut -f1)); on a lent GPU, back to back (a machine idle for"
echo "30 s is given back, and what it kept with it):"
echo "  run(command='scripts/gpu_check.sh core', carry=['devpack/MANIFEST', 'devpack/core.tar.gz'])"
for p in "$OUT_DIR"/smol-*; do
  echo "  run(command='scripts/gpu_check.sh smol', carry=['devpack/MANIFEST', 'devpack/$(basename "$p")'])"
done
