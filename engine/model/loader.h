#pragma once
// Model loading: detects the format and returns one format-independent model.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/gguf.h"
#include "kernels/model/config.h"
#include "kernels/model/weights.h"

namespace medusa {

enum class ModelFormat { kLlama2c, kGguf };

struct LoadedModel {
  ModelFormat format;
  ModelConfig config;
  ModelWeights weights;                // float32, shapes validated against config
  std::unique_ptr<gguf::File> gguf;    // set for GGUF models (vocabulary, chat template)
};

// Detects the format from the file's magic (GGUF) or falls back to llama2.c.
// Corrupt, truncated or inconsistent files give a clear error naming the problem.
absl::StatusOr<LoadedModel> LoadModel(const std::string& path);
absl::StatusOr<LoadedModel> LoadLlama2c(const std::string& path);
absl::StatusOr<LoadedModel> LoadGguf(const std::string& path);

}  // namespace medusa
