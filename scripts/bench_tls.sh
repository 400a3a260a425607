#!/usr/bin/env bash
# The cost of TLS on time to first token: one medusa-server build serving plaintext and TLS side by
# side on loopback (throwaway certificates from `openssl`), `medusa bench` alternating between them
# on one connection each; prints the median over the repeats of each run's p50 / p99.
#   scripts/bench_tls.sh [MODEL]     (default stories260K; REPEATS, REQUESTS, TOKENS from the environment)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MEDUSA_BUILD_DIR:-$ROOT/build}/bin
MODEL=$(realpath "${1:-$ROOT/models/stories260K/stories260K.bin}")
REPEATS=${REPEATS:-7} REQUESTS=${REQUESTS:-40} TOKENS=${TOKENS:-16}
WORK=$(mktemp -d); cd "$WORK"
KEY="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $KEY -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req $KEY -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
echo "subjectAltName=IP:127.0.0.1,DNS:localhost" >ext.cnf
openssl x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -extfile ext.cnf 2>/dev/null
printf '{"prompt": "Once upon a time"}\n{"prompt": "The little dog"}\n' >prompts.jsonl
COMMON=(--model "$MODEL" --threads 1 --kv-cache-mb 64 --log-level warn)
"$BIN/medusa-server" "${COMMON[@]}" --port 51001 --metrics-port 51011 &
PLAIN=$!
"$BIN/medusa-server" "${COMMON[@]}" --port 51002 --metrics-port 51012 --tls-cert-file server.pem \
  --tls-key-file server.key &
TLS=$!
trap 'kill $PLAIN $TLS 2>/dev/null; wait $PLAIN $TLS 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 600); do  # until both answer (a bigger model loads and warms up for a while)
  kill -0 $PLAIN && kill -0 $TLS || { echo "a server exited (its error is above; ports 51001, 51002 in use?)" >&2; exit 1; }
  "$BIN/medusa" client --addr 127.0.0.1:51001 --prompt hi --max-tokens 1 --json >/dev/null 2>&1 &&
    "$BIN/medusa" client --addr 127.0.0.1:51002 --tls-ca-file ca.pem --prompt hi --max-tokens 1 --json \
      >/dev/null 2>&1 && break
  sleep 0.5
done
BENCH=(bench --prompts prompts.jsonl --requests "$REQUESTS" --concurrency 1 --max-tokens "$TOKENS" --ignore-eos --json)
for _ in $(seq "$REPEATS"); do
  echo "plain $("$BIN/medusa" "${BENCH[@]}" --addr 127.0.0.1:51001)"
  echo "tls $("$BIN/medusa" "${BENCH[@]}" --addr 127.0.0.1:51002 --tls-ca-file ca.pem)"
done >results.txt
python3 - results.txt <<'PY'
import json, statistics, sys
rows = {"plain": [], "tls": []}
for line in open(sys.argv[1]):
    kind, text = line.split(" ", 1)
    rows[kind].append(json.loads(text))
for kind, runs in rows.items():
    med = lambda key: statistics.median(r[key] for r in runs)
    print(f"{kind:5} runs={len(runs)} ttft_ms_p50={med('ttft_ms_p50'):.3f} ttft_ms_p99={med('ttft_ms_p99'):.3f} "
          f"itl_ms_p50={med('itl_ms_p50'):.3f} e2e_ms_p50={med('e2e_ms_p50'):.3f} "
          f"errors={sum(r['errors'] for r in runs)}")
PY
