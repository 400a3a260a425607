#pragma once
// Model loading: detects the format and returns one format-independent model.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model/gguf.h"
#include "kernels/model/config.h"
#include "kernels/model/weights.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

enum class ModelFormat { kLlama2c, kGguf, kHuggingFace };

struct LoadedModel {
  ModelFormat format;
  ModelConfig config;
  ModelWeights weights;                // as the load's WeightMode chose, shapes validated
                                       // against config
  std::unique_ptr<gguf::File> gguf;    // set for GGUF models (vocabulary, chat template)
};

// Detects the format: a directory is a Hugging Face checkpoint; a file is GGUF
// by its magic, else llama2.c. Corrupt, truncated or inconsistent files give a
// clear error naming the problem; weights that would not fit in memory,
// ResourceExhausted before they are read. Matrices are kept as `mode` chooses
// (weight_format.h: kAuto keeps each as the file stores it, others convert as
// each is read); norms are always float32.
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, WeightMode mode = WeightMode::kF32);
absl::StatusOr<LoadedModel> LoadLlama2c(const std::string& path, WeightMode mode = WeightMode::kF32);
absl::StatusOr<LoadedModel> LoadGguf(const std::string& path, WeightMode mode = WeightMode::kF32);
// A Hugging Face Llama checkpoint directory (hf_loader.cc says what it reads).
absl::StatusOr<LoadedModel> LoadHuggingFace(const std::string& dir, WeightMode mode = WeightMode::kF32);
// config.json's fields as a ModelConfig (`where` names the checkpoint in errors):
// Unimplemented for architectures and options the engine does not run.
absl::StatusOr<ModelConfig> ParseHuggingFaceConfig(const nlohmann::json& config, const std::string& where);
// ResourceExhausted, naming the memory needed and available, when weights of
// this shape, at `bytes_per_weight`, would not fit in this machine's available
// memory.
absl::Status CheckWeightsFitInMemory(const ModelConfig& config, const std::string& where,
                                     double bytes_per_weight = 4.0);
// ResourceExhausted when `bytes` (what a loader is about to allocate) exceed the memory available
// now (/proc/meminfo's MemAvailable, else free physical pages).
absl::Status CheckBytesFitInMemory(uint64_t bytes, const std::string& where);

}  // namespace medusa
