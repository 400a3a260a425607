#!/usr/bin/env bash
# The GPU checks (DEVELOPERS.md, "On a lent GPU"), run from the repository root on a lent
# machine with pieces of scripts/make_devpack.sh's pack carried in devpack/. Each call keeps
# what it was given in .devpack/ (ignored; kept while the machine stays warm), then:
#   core   unpacks core.tar.xz and runs, in 7.5 minutes at most (later checks get what is left):
#            device.txt      nvidia-smi, the pack's libraries as the loader resolves them
#            tests.txt       tests/cuda: the kernels, the backend, generation (stories260K's
#                            golden text, GPU f32 = CPU and Medusa lossless on SmolLM2's cut)
#            bench.jsonl     gpu_step_bench on Llama-2-7B's shape in f16, CUDA graphs on, then off
#            server.txt      medusa-server --device cuda with the shipped heads: greedy over gRPC
#                            with and without Medusa, concurrent load, the metrics
#            sanitizer.txt   compute-sanitizer memcheck, then racecheck, over the backend tests
#   smol   keeps a part of the full SmolLM2; with every part there, assembles it and reruns the
#          generation tests and the server check on it (the shipped heads' end-to-end speedup).
# Each writes summary.txt, one line per check. Everything goes to $OUT (default out/).
#   scripts/gpu_check.sh core|smol   (GPU_CHECK_DEVICE=cpu runs the server check on the CPU, to try the script)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODE=${1:-}
OUT=${OUT:-$ROOT/out}
KEEP=$ROOT/.devpack
PACK=$KEEP/root
mkdir -p "$OUT" "$KEEP"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
# Seconds a stage may take: its own limit, or what is left of the call's 7.5 minutes.
limit() {
  local left=$((450 - SECONDS))
  [ "$left" -lt "$1" ] && echo $((left > 5 ? left : 5)) || echo "$1"
}
die() { note "gpu_check: $*"; exit 1; }

# Keeps the carried pieces whose checksums the manifest confirms; a manifest of another commit
# starts over.
keep_carried() {
  [ -f devpack/MANIFEST ] || die "no devpack/MANIFEST carried (scripts/make_devpack.sh)"
  if ! cmp -s devpack/MANIFEST "$KEEP/MANIFEST"; then
    rm -rf "$KEEP" && mkdir -p "$KEEP"
    cp devpack/MANIFEST "$KEEP/MANIFEST"
  fi
  for f in devpack/core.tar.xz devpack/smol-*; do
    [ -f "$f" ] || continue
    (cd devpack && grep " $(basename "$f")\$" MANIFEST | sha256sum -c --quiet -) || die "$f: checksum mismatch"
    cp "$f" "$KEEP/"
  done
}

unpack_core() {
  [ -f "$KEEP/core.tar.xz" ] || die "the core piece has not been carried (run 'core' first)"
  if [ ! -d "$PACK/bin" ]; then
    # Python's tarfile reads xz wherever the xz program is missing.
    mkdir -p "$PACK" && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1], 'r:xz').extractall(sys.argv[2])" \
      "$KEEP/core.tar.xz" "$PACK" || die "cannot unpack core.tar.xz"
  fi
  ln -sfn "$ROOT/heads" "$PACK/heads"
  export LD_LIBRARY_PATH=$PACK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export MEDUSA_SOURCE_DIR=$PACK
}

# run_test NAME TIMEOUT LOG ARGS...: a test binary, its outcome in the summary.
run_test() {
  local name=$1 limit=$2 log=$3
  shift 3
  local own=$KEEP/$name.log
  timeout "$(limit "$limit")" "$PACK/bin/$name" "$@" >"$own" 2>&1
  local rc=$? outcome=pass
  { echo "=== $name $*"; cat "$own"; } >>"$log"
  [ $rc -ne 0 ] && outcome="FAIL (exit $rc)"
  [ $rc -eq 0 ] && grep -q '^\[  SKIPPED \]' "$own" && outcome="SKIPPED"
  note "$name $*: $outcome; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) \] [0-9]+ test' "$own" | tr '\n' ' ')"
}

core_checks() {
  { nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    cat "$PACK/COMMIT" 2>/dev/null; for f in "$PACK"/bin/* "$PACK/lib/libmedusa_cuda.so"; do echo "== $f"; ldd "$f"; done
  } >"$OUT/device.txt" 2>&1
  note "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1)"
  grep -q "=> not found" "$OUT/device.txt" && note "missing libraries: $(grep '=> not found' "$OUT/device.txt" | sort -u | tr '\n' ' ')"

  local log=$OUT/tests.txt
  : >"$log"
  run_test cuda_kernels_test 60 "$log"
  run_test gpu_backend_test 120 "$log"
  run_test gpu_generation_test 120 "$log"
  : >"$OUT/bench.jsonl"
  bench 1
  server_check "$OUT/server.txt" 24
  : >"$OUT/sanitizer.txt"
  sanitize memcheck
  bench 0
  sanitize racecheck
}

# bench GRAPHS: gpu_step_bench on Llama-2-7B's shape in f16, against the copy bandwidth the
# workplace measured on this kind of GPU (ENGINEERING.md): H100 3.0 TB/s, H200 4.3.
bench() {
  local bandwidth=3000
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -q H200 && bandwidth=4300
  timeout "$(limit 130)" "$PACK/bin/gpu_step_bench" --shape 7b --weights f16 --cuda-graphs "$1" --steps 20 --runs 5 \
    --bandwidth-gbs $bandwidth >>"$OUT/bench.jsonl" 2>>"$OUT/tests.txt"
  note "gpu_step_bench f16 graphs=$1: exit $?; $(grep '"decode"' "$OUT/bench.jsonl" | tail -2 |
    sed -E 's/.*"context": ([0-9]+), "step_ms": ([0-9.]+).*"fraction_of_floor": ([0-9.]+).*/ctx \1 \2 ms (\3 of floor)/' | tr '\n' ' ')"
}

# sanitize TOOL: compute-sanitizer over the backend tests at small shapes.
sanitize() {
  local log=$OUT/sanitizer.txt
  command -v compute-sanitizer >/dev/null || { note "compute-sanitizer: not on this machine"; return; }
  echo "=== $1" >>"$log"
  timeout "$(limit 90)" compute-sanitizer --tool "$1" --error-exitcode 9 "$PACK/bin/gpu_backend_test" \
    --gtest_filter='GpuBackend.*:*/GpuBackendNumerics.*/odd_sizes_hd8_f16:*/GpuBackendNumerics.*/gqa_hd64_bf16' \
    >>"$log" 2>&1
  local rc=$?
  note "compute-sanitizer $1: $( [ $rc -eq 0 ] && echo clean || echo "FAIL (exit $rc)" ); $(grep -E 'ERROR SUMMARY' "$log" | tail -1)"
}

assemble_smol() {
  local parts expected
  expected=$(grep -c ' smol-' "$KEEP/MANIFEST")
  parts=$(ls "$KEEP"/smol-* 2>/dev/null | wc -l)
  if [ "$parts" -lt "$expected" ]; then
    note "SmolLM2: $parts of $expected parts kept; carry the next"
    exit 0
  fi
  mkdir -p "$PACK/models/smollm2"
  cat "$KEEP"/smol-* >"$PACK/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
}

# The SmolLM2 the pack has: the full model where its parts were carried, else the cut.
smol_model() {
  local full=$PACK/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$full" ] && echo "$full" || echo "$PACK/models/smollm2/SmolLM2-135M-Instruct.cut6.gguf"
}

# server_check LOG REQUESTS: medusa-server on the GPU with the shipped heads; greedy answers over
# gRPC with and without Medusa (identical, and their speed at batch 1), concurrent load, metrics.
server_check() {
  local log=$1 requests=$2 model
  model=$(smol_model)
  : >"$log"
  python3 -c "import json,sys; [print(json.dumps({'prompt': r['instruction']})) for r in json.load(open(sys.argv[1]))[:64]]" \
    "$PACK/data/alpaca_eval.json" >"$KEEP/prompts.jsonl"
  "$PACK/bin/medusa-server" --model "$model" --heads "$ROOT/heads/SmolLM2-135M-Instruct.medusa.safetensors" \
    --tree mc_sim_7b_63 --device "${GPU_CHECK_DEVICE:-cuda}" --port 50551 --metrics-port 9564 --host 127.0.0.1 \
    >>"$log" 2>&1 &
  local server=$!
  local client=("$PACK/bin/medusa" client --addr 127.0.0.1:50551)
  for _ in $(seq 1 120); do
    "${client[@]}" --prompt hi --max-tokens 1 >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { note "medusa-server exited: $(tail -2 "$log" | tr '\n' ' ')"; return; }
    sleep 1
  done
  local i prompt a b
  : >"$KEEP/pairs.jsonl"
  for i in 1 2 3 4 5 6 7 8; do
    prompt=$(sed -n "${i}p" "$KEEP/prompts.jsonl" | python3 -c "import json,sys; print(json.load(sys.stdin)['prompt'])")
    a=$(timeout "$(limit 30)" "${client[@]}" --chat --prompt "$prompt" --max-tokens 128 --json 2>>"$log")
    b=$(timeout "$(limit 30)" "${client[@]}" --chat --prompt "$prompt" --max-tokens 128 --no-medusa --json 2>>"$log")
    echo "{\"medusa\": ${a:-null}, \"plain\": ${b:-null}}" >>"$KEEP/pairs.jsonl"
  done
  cat "$KEEP/pairs.jsonl" >>"$log"
  note "server ($(basename "$model")) greedy over gRPC at batch 1: $(python3 - "$KEEP/pairs.jsonl" <<'PY'
import json, statistics, sys
pairs = [json.loads(line) for line in open(sys.argv[1])]
ok = [p for p in pairs if p["medusa"] and p["plain"]]
same = sum(p["medusa"]["token_ids"] == p["plain"]["token_ids"] for p in ok)
speedup = [p["medusa"]["tokens_per_second"] / p["plain"]["tokens_per_second"] for p in ok]
accel = [p["medusa"]["acceleration_rate"] for p in ok]
print(f"{same} of {len(pairs)} Medusa answers identical to plain; median speedup "
      f"{statistics.median(speedup) if speedup else 0:.2f}x, acceleration {statistics.median(accel) if accel else 0:.2f}")
PY
)"
  local flags out
  for flags in "" "--no-medusa"; do
    out=$(timeout "$(limit 60)" "$PACK/bin/medusa" bench --addr 127.0.0.1:50551 --prompts "$KEEP/prompts.jsonl" \
      --concurrency 8 --requests "$requests" $flags --json 2>>"$log")
    echo "bench $flags: $out" >>"$log"
    note "server bench concurrency 8 ${flags:-medusa}: $out"
  done
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9564/metrics').read().decode())" \
    >"$KEEP/metrics.txt" 2>>"$log"
  grep -E '^medusa_(acceleration_rate|step_overhead_ratio|generated_tokens_total|requests_total)' "$KEEP/metrics.txt" >>"$log"
  note "metrics: $(grep -E '^medusa_(acceleration_rate|step_overhead_ratio) ' "$KEEP/metrics.txt" | tr '\n' ' ')"
  kill -TERM "$server" && wait "$server"
  note "server exit on SIGTERM: $?"
}

smol_checks() {
  run_test gpu_generation_test 240 "$OUT/tests_smol.txt" --gtest_filter='-GpuGeneration.Stories*'
  server_check "$OUT/server_smol.txt" 48
}

case "$MODE" in
  core) keep_carried; unpack_core; core_checks ;;
  smol) keep_carried; unpack_core; assemble_smol; smol_checks ;;
  *) echo "usage: scripts/gpu_check.sh core|smol" >&2; exit 2 ;;
esac
