#pragma once
// Random-weight Hugging Face checkpoints of real Llama shapes, so benchmarks and the GPU
// check run real sizes without downloading weights (`medusa make-model`).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/hf_writer.h"
#include "engine/model/safetensors.h"
#include "kernels/model/config.h"

namespace medusa {

// The shapes `medusa make-model --shape` knows (llama-2-7b, llama-3-8b, mistral-7b,
// smollm2-135m, tiny); NotFound naming them for another name.
absl::StatusOr<ModelConfig> KnownShape(const std::string& name);
std::vector<std::string> KnownShapeNames();

// Writes `shape` to `dir` as a Hugging Face checkpoint (hf_writer.h). Values are uniform, deterministic in `seed` and
// each tensor's name, scaled by 1/sqrt(fan-in) (the down projection also by 1/sqrt(2 layers)) so activations neither
// vanish nor overflow through every layer; norms are 1. One layer's values are in memory at a time.
absl::StatusOr<HfCheckpointReport> WriteRandomCheckpoint(const ModelConfig& shape, safetensors::DType dtype,
                                                         uint64_t seed, const std::string& dir);

}  // namespace medusa
