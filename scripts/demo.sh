#!/usr/bin/env bash
# Runs the default model: SmolLM2-135M-Instruct with its shipped Medusa heads,
# answering a chat prompt, streamed to the terminal. Extra arguments go to
# `medusa generate` (e.g. --no-medusa, --tree mc_sim_7b_63).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
exec "$BUILD_DIR/bin/medusa" generate --model "$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --heads "$ROOT/heads/SmolLM2-135M-Instruct.medusa.safetensors" --tree auto \
  --chat --prompt "${MEDUSA_PROMPT:-Write a short poem about the sea.}" --max-tokens 200 "$@"
