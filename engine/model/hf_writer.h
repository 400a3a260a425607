#pragma once
// Writes Llama weights as a Hugging Face checkpoint: config.json (transformers 4's layout) and
// safetensors shards (the embedding, each layer, then the final norm and head) listed by
// model.safetensors.index.json. One shard's values are in memory at a time.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/hf_layout.h"
#include "engine/model/safetensors.h"
#include "kernels/model/config.h"
#include "kernels/model/weights.h"

namespace medusa {

struct HfCheckpointReport {
  int64_t parameters = 0;
  int64_t bytes = 0;  // tensor data written
  int shards = 0;
};

// A tensor's values in Hugging Face's layout (PyTorch order, rotate-half Q/K rows).
using HfTensorValues = std::function<std::vector<float>(const HfTensor&)>;

absl::StatusOr<HfCheckpointReport> WriteHfCheckpoint(const ModelConfig& config, safetensors::DType dtype,
                                                     const std::string& dir, const HfTensorValues& values);

// A loaded model (any format) written in Hugging Face's layout: its Q/K rows moved from the
// engine's adjacent-pair RoPE order back to rotate-half order, the inverse of the loader's.
absl::StatusOr<HfCheckpointReport> ExportHfCheckpoint(const ModelConfig& config, const ModelWeights& weights,
                                                      safetensors::DType dtype, const std::string& dir);

}  // namespace medusa
