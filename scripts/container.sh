#!/usr/bin/env bash
# Builds the container images of docker/ with podman and checks the CPU image for real.
#   scripts/container.sh [build|check] [cpu|cuda|all]      (default: build cpu)
# build: makes the base image localhost/debian:bookworm when it is missing (mmdebstrap minbase from
#   this machine's Debian apt sources, then `podman import`: no registry is needed), then builds
#   localhost/medusa-serve:<cpu|cuda> from docker/Dockerfile.<cpu|cuda>. The CUDA image's toolkit
#   and cuBLAS come from the PyPI wheels pinned in docker/cuda-wheels.txt, downloaded here on the
#   host into docker/cuda-wheels/ (git-ignored), where pip checks their hashes.
# check: builds, then (cpu only: the CUDA image needs a GPU to run) runs the image with the
#   default model (SmolLM2-135M-Instruct Q4_1 and its shipped heads, as scripts/serve.sh) mounted
#   read-only at /models, a read-only root filesystem and the image's default security (a bearer
#   token, mounted as a file), on loopback; checks health SERVING (the image's own HEALTHCHECK
#   too), one streamed Generate, then SIGTERM during a longer stream: the stream must complete (the
#   drain), the log must say so, and the container must exit 0. Prints image sizes and timings.
# Environment: MEDUSA_BASE_IMAGE (default localhost/debian:bookworm), MEDUSA_MARCH (default x86-64-v4: the CPU kernels' target, see docs/containers.md),
# MEDUSA_IMAGE (default localhost/medusa-serve), MEDUSA_BUILD_DIR (default build: where the
# containers.conf and logs go, and whose bin/medusa is the client when it exists).
# podman runs with runc and the ulimits these machines need (../shared/ENGINEERING.md), through a
# containers.conf of its own (CONTAINERS_CONF), and --network host for build and run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
ACTION=${1:-build}
FLAVOURS=${2:-cpu}
BASE_IMAGE=${MEDUSA_BASE_IMAGE:-localhost/debian:bookworm}
IMAGE=${MEDUSA_IMAGE:-localhost/medusa-serve}
MARCH=${MEDUSA_MARCH:-x86-64-v4}
WORK=$BUILD_DIR/container

log() { printf '\033[1;34m[container]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[container] error:\033[0m %s\n' "$*" >&2; exit 1; }

case "$ACTION" in build | check) ;; *) die "usage: $0 [build|check] [cpu|cuda|all]" ;; esac
case "$FLAVOURS" in cpu | cuda) ;; all) FLAVOURS="cpu cuda" ;; *) die "usage: $0 [build|check] [cpu|cuda|all]" ;; esac
command -v podman >/dev/null || die "podman is not installed (scripts/setup.sh installs it)"

mkdir -p "$WORK"
# crun fails on these machines' hybrid cgroups: runc. A nofile above the hard limit fails every
# container start.
hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$hard_nofile:$hard_nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$WORK/containers.conf

# Seconds since `start` with one decimal.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
TIMINGS=()
timed() {  # timed LABEL command...: runs it, records how long it took
  local label=$1 start
  shift
  start=$(now)
  "$@"
  TIMINGS+=("$label: $(since "$start") s")
}

# The Debian sources this machine's apt uses (deb822 or one-line files naming a Debian mirror).
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && grep -Eq '^[^#]*(/debian|/debian-security)([[:space:]/]|$)' "$f" && echo "$f"
  done
  return 0
}

make_base_image() {
  if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE: present"
    return
  fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (scripts/setup.sh installs it)"
  local sources=()
  mapfile -t sources < <(apt_sources)
  [ ${#sources[@]} -gt 0 ] || sources=(http://deb.debian.org/debian)
  log "base image $BASE_IMAGE: mmdebstrap minbase from ${sources[*]}"
  local tar=$WORK/debian-bookworm.tar
  rm -f "$tar"
  # </dev/null: without a tty mmdebstrap would read sources from standard input.
  if ! mmdebstrap --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr bookworm "$tar" \
    "${sources[@]}" </dev/null >"$WORK/mmdebstrap.log" 2>&1; then
    tail -n 30 "$WORK/mmdebstrap.log" >&2
    die "mmdebstrap failed (whole log: $WORK/mmdebstrap.log)"
  fi
  podman import --quiet "$tar" "$BASE_IMAGE" >/dev/null
  rm -f "$tar"
}

fetch_cuda_wheels() {
  log "CUDA wheels (docker/cuda-wheels.txt) into docker/cuda-wheels/"
  # Downloaded for the image's platform, not this host's Python: only the files matter.
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux2010_x86_64 --python-version 3.11 \
    -r "$ROOT/docker/cuda-wheels.txt" -d "$ROOT/docker/cuda-wheels"
}

build_image() {
  local flavour=$1
  [ "$flavour" = cuda ] && timed "cuda wheels" fetch_cuda_wheels
  log "building $IMAGE:$flavour (-march=$MARCH); log in $WORK/build-$flavour.log"
  # --format docker: the OCI format has no HEALTHCHECK and would drop it. --jobs 2: the run
  # stage's apt-get runs while the build stage compiles.
  if ! podman build --network host --format docker --jobs 2 --build-arg "MARCH=$MARCH" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -f "$ROOT/docker/Dockerfile.$flavour" \
    -t "$IMAGE:$flavour" "$ROOT" >"$WORK/build-$flavour.log" 2>&1; then
    tail -n 40 "$WORK/build-$flavour.log" >&2
    die "podman build of $IMAGE:$flavour failed (whole log: $WORK/build-$flavour.log)"
  fi
}

image_size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

CONTAINER=""
CLIENT_PID=""
cleanup() {
  if [ -n "$CLIENT_PID" ]; then kill "$CLIENT_PID" 2>/dev/null || true; fi
  if [ -n "$CONTAINER" ]; then podman rm --force --ignore "$CONTAINER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

check_cpu_image() {
  local image=$IMAGE:cpu
  local model=$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  local heads=$ROOT/heads/SmolLM2-135M-Instruct.medusa.safetensors
  [ -f "$model" ] || die "$model is missing: run scripts/setup.sh"
  local dir=$WORK/check
  rm -rf "$dir"
  mkdir -p "$dir"
  # The image's default asks for a token at /run/secrets/medusa-token; the container's user
  # (uid 10001) must be able to read it.
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
  chmod 0644 "$dir/token"
  local port metrics_port
  port=$(free_port)
  metrics_port=$(free_port)
  # The client: this build's medusa when there is one, else the image's own in a second container.
  local client=("$BUILD_DIR/bin/medusa")
  if [ ! -x "${client[0]}" ]; then
    client=(podman run --rm --network host -v "$dir/token:$dir/token:ro" --entrypoint medusa "$image")
  fi
  CONTAINER=medusa-check-$$
  log "running $image as $CONTAINER on 127.0.0.1:$port (metrics $metrics_port)"
  local start
  start=$(now)
  # Loopback only, though the network is the host's: the check listens on nothing else.
  podman run --detach --name "$CONTAINER" --network host --read-only \
    -e MEDUSA_HOST=127.0.0.1 -e MEDUSA_METRICS_HOST=127.0.0.1 -e "MEDUSA_PORT=$port" -e "MEDUSA_METRICS_PORT=$metrics_port" \
    -v "$model:/models/model.gguf:ro" -v "$(dirname "$heads"):/models/heads:ro" -v "$dir/token:/run/secrets/medusa-token:ro" \
    "$image" --heads="/models/heads/$(basename "$heads")" --tree=auto --shutdown-grace-seconds=120 >/dev/null

  local health=(podman exec "$CONTAINER" medusa health --addr "127.0.0.1:$port" --service medusa.v1.Generator)
  local waited=0
  until "${health[@]}" >/dev/null 2>&1; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$CONTAINER")" != true ]; then
      podman logs "$CONTAINER" >&2 || true
      die "the container exited before serving"
    fi
    [ $waited -lt 300 ] || die "not SERVING after 300 s: $(podman logs "$CONTAINER" 2>&1 | tail -n 20)"
    sleep 1
    waited=$((waited + 1))
  done
  TIMINGS+=("start to SERVING: $(since "$start") s")
  log "health: $("${health[@]}")"
  # The image's HEALTHCHECK itself (podman runs it on demand; kept by --format docker).
  podman healthcheck run "$CONTAINER" >/dev/null || die "the image's HEALTHCHECK says unhealthy"
  log "HEALTHCHECK: healthy"

  start=$(now)
  "${client[@]}" client --addr "127.0.0.1:$port" --auth-token-file "$dir/token" --chat \
    --prompt "Write a haiku about the sea." --max-tokens 32 --json >"$dir/first.json" ||
    die "Generate failed: $(cat "$dir/first.json")"
  python3 - "$dir/first.json" <<'EOF' || die "unexpected Generate answer: $(cat "$dir/first.json")"
import json, sys
answer = json.load(open(sys.argv[1]))
assert answer["new_tokens"] > 0 and answer["text"].strip(), answer
print(f"[container] Generate: {answer['new_tokens']} tokens, {answer['tokens_per_second']:.1f} tokens/s:",
      json.dumps(answer["text"][:60]))
EOF
  TIMINGS+=("one Generate: $(since "$start") s")

  # A longer stream, then SIGTERM once it runs: the drain lets it finish.
  local tokens=192
  "${client[@]}" client --addr "127.0.0.1:$port" --auth-token-file "$dir/token" --prompt "Tell me a long story." \
    --max-tokens $tokens --ignore-eos --json >"$dir/drained.json" 2>"$dir/drained.err" &
  CLIENT_PID=$!
  waited=0
  local before
  before=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["new_tokens"])' "$dir/first.json")
  # Running: the server has generated some of its tokens (its Prometheus counter says so).
  until python3 - "$metrics_port" "$before" <<'EOF'; do
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
sys.exit(0 if any(l.startswith("medusa_generated_tokens_total") and float(l.split()[-1]) >= int(sys.argv[2]) + 4
                  for l in text.splitlines()) else 1)
EOF
    [ $waited -lt 120 ] || die "the long stream did not start within 60 s"
    sleep 0.5
    waited=$((waited + 1))
  done
  log "SIGTERM during a stream of $tokens tokens"
  start=$(now)
  podman kill --signal TERM "$CONTAINER" >/dev/null
  wait "$CLIENT_PID" || die "the stream was cut by SIGTERM: $(cat "$dir/drained.err")"
  CLIENT_PID=""
  python3 - "$dir/drained.json" "$tokens" <<'EOF' || die "the drained stream did not complete: $(cat "$dir/drained.json")"
import json, sys
answer = json.load(open(sys.argv[1]))
assert answer["new_tokens"] == int(sys.argv[2]) and answer["finish_reason"] == "length", answer
EOF
  local code
  code=$(podman wait "$CONTAINER")
  TIMINGS+=("SIGTERM to exit: $(since "$start") s")
  podman logs "$CONTAINER" >"$dir/server.log" 2>&1
  [ "$code" = 0 ] || die "the container exited $code after SIGTERM: $(tail -n 20 "$dir/server.log")"
  grep -q "signal 15: shutting down" "$dir/server.log" || die "SIGTERM did not reach medusa-server (log: $dir/server.log)"
  grep -q "shut down in" "$dir/server.log" || die "no drain in the log ($dir/server.log)"
  if grep -q "streams still running" "$dir/server.log"; then die "streams were cut after the grace period"; fi
  log "drained: the stream completed ($tokens tokens), \"$(grep -o 'shut down in [0-9.]* s' "$dir/server.log")\", exit 0"
  podman rm --ignore "$CONTAINER" >/dev/null
  CONTAINER=""
}

total=$(now)
timed "base image" make_base_image
for flavour in $FLAVOURS; do
  timed "build $flavour" build_image "$flavour"
done
if [ "$ACTION" = check ]; then
  for flavour in $FLAVOURS; do
    if [ "$flavour" = cpu ]; then
      timed "check cpu" check_cpu_image
    else
      log "check $flavour: built only (running it needs a GPU)"
    fi
  done
fi
for flavour in $FLAVOURS; do log "image $IMAGE:$flavour: $(image_size "$IMAGE:$flavour")"; done
for t in "${TIMINGS[@]}"; do log "time, $t"; done
log "time, total: $(since "$total") s"
