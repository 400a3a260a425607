#!/usr/bin/env bash
# Runs the default model: SmolLM2-135M-Instruct answering a chat prompt,
# streamed to the terminal. Extra arguments go to `medusa generate`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${MEDUSA_BUILD_DIR:-$ROOT/build}
exec "$BUILD_DIR/bin/medusa" generate --model "$ROOT/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --chat --prompt "${MEDUSA_PROMPT:-Write a short poem about the sea.}" --max-tokens 200 "$@"
