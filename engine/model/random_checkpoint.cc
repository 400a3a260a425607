#include "engine/model/random_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model/hf_layout.h"
#include "engine/model/hf_writer.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

ModelConfig Shape(const char* name, int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int context,
                  float theta, bool tied) {
  ModelConfig c;
  c.name = name;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.max_seq_len = context;
  c.rms_eps = 1e-5f;
  c.rope_theta = theta;
  c.tied_classifier = tied;
  return c;
}

std::vector<ModelConfig> Shapes() {
  ModelConfig llama3 = Shape("llama-3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f, false);
  llama3.rope_scaling = {8.0f, 1.0f, 4.0f, 8192};
  return {Shape("llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, false), llama3,
          Shape("mistral-7b", 4096, 14336, 32, 32, 8, 32000, 32768, 1000000.0f, false),
          Shape("smollm2-135m", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0f, true),
          Shape("tiny", 64, 160, 2, 4, 2, 97, 512, 10000.0f, false)};
}

// Uniform values with standard deviation `sd` (0: all ones), from the seed and the name.
std::vector<float> Values(uint64_t seed, const std::string& name, int64_t count, double sd) {
  std::vector<float> v(count);
  if (sd == 0.0) {
    std::fill(v.begin(), v.end(), 1.0f);
    return v;
  }
  uint64_t x = seed ^ (std::hash<std::string>()(name) * 0x9E3779B97F4A7C15ull) ^ 0xD1B54A32D192ED03ull;
  const float scale = static_cast<float>(sd * std::sqrt(3.0)) * (2.0f / 16777216.0f);
  const float offset = static_cast<float>(sd * std::sqrt(3.0));
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = static_cast<float>(x >> 40) * scale - offset;
  }
  return v;
}

// Values' standard deviation: 1/sqrt(fan-in), the projections into the residual stream also
// over sqrt(2 layers) so that its growth stays bounded; norms are 1 (0: all ones); the
// embedding's rows are O(1).
double StandardDeviation(const ModelConfig& c, HfRole role) {
  const double layers2 = 2.0 * c.n_layers;
  switch (role) {
    case HfRole::kEmbedding:
      return 1.0;
    case HfRole::kAttnNorm:
    case HfRole::kFfnNorm:
    case HfRole::kFinalNorm:
      return 0.0;
    case HfRole::kO:
      return 1.0 / std::sqrt(c.q_dim() * layers2);
    case HfRole::kDown:
      return 1.0 / std::sqrt(c.hidden_dim * layers2);
    default:
      return 1.0 / std::sqrt(static_cast<double>(c.dim));
  }
}

}  // namespace

std::vector<std::string> KnownShapeNames() {
  std::vector<std::string> names;
  for (const ModelConfig& c : Shapes()) names.push_back(c.name);
  return names;
}

absl::StatusOr<ModelConfig> KnownShape(const std::string& name) {
  for (const ModelConfig& c : Shapes()) {
    if (c.name == name) return c;
  }
  return absl::NotFoundError(
      absl::StrCat("unknown model shape '", name, "' (known: ", absl::StrJoin(KnownShapeNames(), ", "), ")"));
}

absl::StatusOr<HfCheckpointReport> WriteRandomCheckpoint(const ModelConfig& shape, safetensors::DType dtype,
                                                         uint64_t seed, const std::string& dir) {
  RETURN_IF_ERROR(shape.Validate());
  if (dtype != safetensors::DType::kF32 && dtype != safetensors::DType::kF16 && dtype != safetensors::DType::kBF16) {
    return absl::InvalidArgumentError("a random checkpoint is written in F32, F16 or BF16");
  }
  return WriteHfCheckpoint(shape, dtype, dir, [&](const HfTensor& t) {
    int64_t count = 1;
    for (int64_t d : t.shape) count *= d;
    return Values(seed, t.name, count, StandardDeviation(shape, t.role));
  });
}

}  // namespace medusa
