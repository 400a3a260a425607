#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run scripts/gpu_check.sh (DEVELOPERS.md, "On a lent
# GPU"): such a machine has CUDA but no gRPC, Abseil or GoogleTest and no network. The pack
# travels beside the working tree in `run` calls (64 MiB in all):
#   core.tar.xz   everything one call needs: the GPU tests and benchmark, medusa and
#                 medusa-server, the CUDA plugin, the shared libraries they load that are not
#                 the C library's or CUDA's, stories260K, SmolLM2 cut to its first 6 layers
#                 (scripts/cut_gguf.py: the full GGUF's 94 MB cannot travel whole) and the
#                 AlpacaEval prompts;
#   smol-00, ...  optionally, the full SmolLM2 GGUF in parts, one call each (`gpu_check.sh
#                 smol`), for its end-to-end speedup with the shipped heads;
# and a MANIFEST of checksums.
#   scripts/make_devpack.sh [--part-mib 48]
# Writes devpack/ (ignored by git). Needs a CUDA build (scripts/setup.sh where the toolkit is
# installed) and makes .venv/ with the PyPI package gguf for the cut.
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
if [ ! -x "$ROOT/.venv/bin/python" ] || ! "$ROOT/.venv/bin/python" -c "import gguf" 2>/dev/null; then
  python3 -m venv "$ROOT/.venv" && "$ROOT/.venv/bin/pip" install -q gguf==0.19.0 numpy || die "cannot install gguf"
fi
mkdir -p "$STAGE/models/smollm2"
"$ROOT/.venv/bin/python" "$ROOT/scripts/cut_gguf.py" --layers 6 --embedding-type Q4_1 \
  "$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$STAGE/models/smollm2/SmolLM2-135M-Instruct.cut6.gguf"
git -C "$ROOT" rev-parse HEAD >"$STAGE/COMMIT"

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
tar -C "$STAGE" -cf - . | xz -T0 -9 >"$OUT_DIR/core.tar.xz"
split -b "${PART_MIB}M" -d -a 2 "$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$OUT_DIR/smol-"
{
  echo "commit $(git -C "$ROOT" rev-parse HEAD)"
  (cd "$OUT_DIR" && sha256sum core.tar.xz smol-*)
} >"$OUT_DIR/MANIFEST"
# What one call carries: the working tree (tracked and untracked, not ignored) and a piece.
TREE=$(git -C "$ROOT" ls-files -z -co --exclude-standard | (cd "$ROOT" && xargs -0 cat 2>/dev/null) | wc -c)
CORE=$(stat -c %s "$OUT_DIR/core.tar.xz")
echo "devpack: core.tar.xz $((CORE >> 20)) MiB + working tree $((TREE >> 20)) MiB of the 64 MiB a call carries"
[ $((CORE + TREE)) -lt $((62 << 20)) ] || die "the core piece and the working tree exceed 62 MiB: cut fewer layers"
echo "On a lent GPU: run(command='scripts/gpu_check.sh core', carry=['devpack/MANIFEST', 'devpack/core.tar.xz'])"
echo "then optionally, back to back (a machine idle for 30 s is given back, and what it kept with it):"
for p in "$OUT_DIR"/smol-*; do
  echo "  run(command='scripts/gpu_check.sh smol', carry=['devpack/MANIFEST', 'devpack/$(basename "$p")'])"
done
