#!/usr/bin/env bash
# Peer measurement for BENCHMARKS.md: llama.cpp's llama-bench on SmolLM2-135M-Instruct,
# prefill (pp) and decode (tg) throughput, medians over repetitions.
#
# Usage: scripts/bench_llamacpp.sh path/to/llama-bench   (or LLAMA_BENCH=path/to/llama-bench)
#   env: THREADS (2), PROMPT (128 prefill tokens), GEN (64 decoded tokens), REPS (5),
#        REPACK (1: llama.cpp's default weight repacking; 0 disables extra buffer types),
#        MODELS (space-separated GGUF paths; default F32 and Q4_1 SmolLM2 below)
#
# The F32 GGUF (same weights as the Q4_1 file, dequantized; our engine computes in float32)
# is made by scripts/gguf_to_f32.py when absent.
#
# llama-bench is not part of this repo. One way to get it (llama.cpp sources ship in the
# PyPI sdist of llama-cpp-python; 0.3.36 vendors llama.cpp commit 0c1e570):
#   pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
#   cmake -S llama_cpp_python-0.3.36/vendor/llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
#     -DGGML_NATIVE=ON -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF \
#     -DCMAKE_C_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
#     -DCMAKE_CXX_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
#   cmake --build build -j2 --target llama-bench
# (-mno-amx-*: with AMX compiled in, this llama.cpp version segfaults in
#  ggml_backend_amx_mul_mat on the Q4_1 model on this machine; F32 never uses AMX.)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
llama_bench="${1:-${LLAMA_BENCH:-}}"
threads="${THREADS:-2}"
prompt="${PROMPT:-128}"
gen="${GEN:-64}"
reps="${REPS:-5}"
repack="${REPACK:-1}"
smol="${repo_root}/models/smollm2"
models="${MODELS:-${smol}/SmolLM2-135M-Instruct.F32.gguf ${smol}/SmolLM2-135M-Instruct.Q4_1.gguf}"

if [[ -z "${llama_bench}" || ! -x "${llama_bench}" ]]; then
  echo "llama-bench not found at '${llama_bench}' (pass its path as the first argument, or LLAMA_BENCH)" >&2
  exit 1
fi
if [[ ! -f "${smol}/SmolLM2-135M-Instruct.F32.gguf" ]]; then
  python3 "${repo_root}/scripts/gguf_to_f32.py" "${smol}/SmolLM2-135M-Instruct.Q4_1.gguf" \
    "${smol}/SmolLM2-135M-Instruct.F32.gguf"
fi

# Shared machines are noisy: the load average before and after tells how much.
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
results="$(mktemp)"
trap 'rm -f "${results}"' EXIT
for model in ${models}; do
  cmd=("${llama_bench}" -m "${model}" -t "${threads}" -p "${prompt}" -n "${gen}"
       -r "${reps}" --repack "${repack}" -o jsonl)
  echo "+ ${cmd[*]}" >&2
  "${cmd[@]}" 2>/dev/null >> "${results}"
done

python3 - "${results}" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
if not rows:
    sys.exit("llama-bench produced no results")
first = rows[0]
print(f"llama.cpp build {first['build_commit']} ({first['build_number']}), "
      f"backend {first['backends']}, cpu: {first['cpu_info']}")
print(f"{'model':<44} {'test':>6} {'threads':>7} {'median tok/s':>13} {'samples tok/s'}")
for r in rows:
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    samples = r["samples_ts"]
    model = r["model_filename"].rsplit("/", 1)[-1]
    print(f"{model:<44} {test:>6} {r['n_threads']:>7} {statistics.median(samples):>13.2f} "
          f"{' '.join(f'{s:.2f}' for s in samples)}")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
