#!/usr/bin/env bash
# Runs medusa-server on the default model: SmolLM2-135M-Instruct with its shipped Medusa
# heads and the trees measured for them (--tree auto), gRPC on 127.0.0.1:50051 and Prometheus
# metrics on 127.0.0.1:9464, until Ctrl-C (a graceful shutdown). Extra arguments go to
# medusa-server (e.g. --port 50052, --log-format json); so do MEDUSA_<FLAG> variables. To serve
# other machines, add --host 0.0.0.0 with TLS (--tls-cert-file, --tls-key-file) and/or a token
# (--auth-token-file); medusa-server refuses a non-loopback address without either.
# Try it from another terminal:
#   build/bin/medusa client --addr localhost:50051 --chat --prompt "Write a haiku about the sea."
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
exec "$BUILD_DIR/bin/medusa-server" --model "$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --heads "$ROOT/heads/SmolLM2-135M-Instruct.medusa.safetensors" --tree auto "$@"
