#!/usr/bin/env bash
# The GPU checks (DEVELOPERS.md, "On a lent GPU"), run from the repository root on a lent
# machine with pieces of scripts/make_devpack.sh's pack carried in devpack/. Each call keeps
# what it was given in .devpack/ (ignored; kept while the machine stays warm), then:
#   core   unpacks the core piece and runs what needs no SmolLM2 (7.5 minutes at most):
#            device.txt      nvidia-smi, the pack's libraries as the loader resolves them
#            tests.txt       tests/cuda: the kernels, the backend, stories260K's golden text
#            sanitizer.txt   compute-sanitizer memcheck and racecheck over a subset
#            bench.jsonl     gpu_step_bench on Llama-2-7B's shape, f16, CUDA graphs on and off
#   smol   keeps a SmolLM2 part; with every part there, assembles the model and runs:
#            tests_smol.txt  the generation tests (GPU f32 = CPU, Medusa lossless per storage type)
#            server.txt      medusa-server --device cuda with the shipped heads: greedy over gRPC
#                            with and without Medusa, concurrent load, the metrics
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
  for f in devpack/core.tar.gz devpack/smol-*; do
    [ -f "$f" ] || continue
    (cd devpack && grep " $(basename "$f")\$" MANIFEST | sha256sum -c --quiet -) || die "$f: checksum mismatch"
    cp "$f" "$KEEP/"
  done
}

unpack_core() {
  [ -f "$KEEP/core.tar.gz" ] || die "the core piece has not been carried (run 'core' first)"
  if [ ! -d "$PACK/bin" ]; then
    mkdir -p "$PACK" && tar -C "$PACK" -xzf "$KEEP/core.tar.gz" || die "cannot unpack core.tar.gz"
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
  run_test gpu_generation_test 45 "$log" --gtest_filter='GpuGeneration.Stories*'

  local bandwidth=3000  # GB/s, device-to-device copy (ENGINEERING.md): H100 3.0 TB/s, H200 4.3
  nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200 && bandwidth=4300
  : >"$OUT/bench.jsonl"
  for graphs in 1 0; do
    timeout "$(limit 130)" "$PACK/bin/gpu_step_bench" --shape 7b --weights f16 --cuda-graphs $graphs --steps 20 --runs 5 \
      --bandwidth-gbs $bandwidth >>"$OUT/bench.jsonl" 2>>"$OUT/tests.txt"
    note "gpu_step_bench f16 graphs=$graphs: exit $?; $(grep '"decode"' "$OUT/bench.jsonl" | tail -2 | \
      sed -E 's/.*"context": ([0-9]+), "step_ms": ([0-9.]+).*"fraction_of_floor": ([0-9.]+).*/ctx \1 \2 ms (\3 of floor)/' | tr '\n' ' ')"
  done

  log=$OUT/sanitizer.txt
  : >"$log"
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck; do
      echo "=== $tool" >>"$log"
      timeout "$(limit 60)" compute-sanitizer --tool "$tool" --error-exitcode 9 "$PACK/bin/gpu_backend_test" \
        --gtest_filter='GpuBackend.CopyKv*:GpuBackend.Argmax*:*/GpuBackendNumerics.TreeNodes*/odd_sizes_hd8_f16:*/GpuBackendNumerics.CudaGraphs*/gqa_hd64_bf16' \
        >>"$log" 2>&1
      local rc=$?
      note "compute-sanitizer $tool: $( [ $rc -eq 0 ] && echo clean || echo "FAIL (exit $rc)" ); $(grep -E 'ERROR SUMMARY' "$log" | tail -1)"
    done
  else
    note "compute-sanitizer: not on this machine"
  fi
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

smol_checks() {
  local log=$OUT/tests_smol.txt
  : >"$log"
  run_test gpu_generation_test 240 "$log" --gtest_filter='-GpuGeneration.Stories*'

  log=$OUT/server.txt
  : >"$log"
  local model=$PACK/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf heads=$ROOT/heads/SmolLM2-135M-Instruct.medusa.safetensors
  python3 -c "import json,sys; [print(json.dumps({'prompt': r['instruction']})) for r in json.load(open(sys.argv[1]))[:64]]" \
    "$PACK/data/alpaca_eval.json" >"$KEEP/prompts.jsonl"
  "$PACK/bin/medusa-server" --model "$model" --heads "$heads" --tree mc_sim_7b_63 --device "${GPU_CHECK_DEVICE:-cuda}" --port 50551 \
    --metrics-port 9564 --host 127.0.0.1 >>"$log" 2>&1 &
  local server=$!
  local client=("$PACK/bin/medusa" client --addr 127.0.0.1:50551)
  for _ in $(seq 1 120); do
    "${client[@]}" --prompt hi --max-tokens 1 >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { note "medusa-server exited: $(tail -2 "$log" | tr '\n' ' ')"; return; }
    sleep 1
  done
  local same=0 total=0
  for i in 1 2 3 4 5 6; do
    local prompt
    prompt=$(sed -n "${i}p" "$KEEP/prompts.jsonl" | python3 -c "import json,sys; print(json.load(sys.stdin)['prompt'])")
    local a b
    a=$(timeout 30 "${client[@]}" --chat --prompt "$prompt" --max-tokens 96 --json 2>>"$log")
    b=$(timeout 30 "${client[@]}" --chat --prompt "$prompt" --max-tokens 96 --no-medusa --json 2>>"$log")
    echo "medusa: $a" >>"$log"
    echo "plain:  $b" >>"$log"
    total=$((total + 1))
    python3 -c "import json,sys; a,b=(json.loads(x) for x in sys.argv[1:]); sys.exit(a['token_ids']!=b['token_ids'])" "$a" "$b" 2>>"$log" \
      && same=$((same + 1))
  done
  note "server greedy over gRPC, Medusa vs plain: $same of $total identical"
  for flags in "" "--no-medusa"; do
    local out
    out=$(timeout "$(limit 60)" "$PACK/bin/medusa" bench --addr 127.0.0.1:50551 --prompts "$KEEP/prompts.jsonl" \
      --concurrency 8 --requests 48 $flags --json 2>>"$log")
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

case "$MODE" in
  core) keep_carried; unpack_core; core_checks ;;
  smol) keep_carried; unpack_core; assemble_smol; smol_checks ;;
  *) echo "usage: scripts/gpu_check.sh core|smol" >&2; exit 2 ;;
esac
