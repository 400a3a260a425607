#include "engine/model/hf_writer.h"

#include <filesystem>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json ConfigJson(const ModelConfig& c, safetensors::DType dtype) {
  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"model_type", "llama"},
            {"hidden_size", c.dim},
            {"intermediate_size", c.hidden_dim},
            {"num_hidden_layers", c.n_layers},
            {"num_attention_heads", c.n_heads},
            {"num_key_value_heads", c.n_kv_heads},
            {"head_dim", c.head_dim},
            {"vocab_size", c.vocab_size},
            {"max_position_embeddings", c.max_seq_len},
            {"rms_norm_eps", c.rms_eps},
            {"rope_theta", c.rope_theta},
            {"tie_word_embeddings", c.tied_classifier},
            {"hidden_act", "silu"},
            {"torch_dtype", dtype == safetensors::DType::kF32   ? "float32"
                            : dtype == safetensors::DType::kF16 ? "float16"
                                                                : "bfloat16"}};
  if (c.rope_scaling.factor > 0.0f) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_context}};
  }
  return j;
}

// Each head's rows from the engine's adjacent pairs back to rotate-half order: HF row i takes
// row 2i, HF row i + head_dim / 2 takes row 2i + 1 (the inverse of the loader's interleave).
std::vector<float> RotateHalfRows(const std::vector<float>& w, int heads, int head_dim, int64_t cols) {
  std::vector<float> out(w.size());
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < half; ++i) {
      const float* pair = w.data() + (static_cast<int64_t>(h) * head_dim + 2 * i) * cols;
      std::copy(pair, pair + cols, out.data() + (static_cast<int64_t>(h) * head_dim + i) * cols);
      std::copy(pair + cols, pair + 2 * cols, out.data() + (static_cast<int64_t>(h) * head_dim + half + i) * cols);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<HfCheckpointReport> WriteHfCheckpoint(const ModelConfig& config, safetensors::DType dtype,
                                                     const std::string& dir, const HfTensorValues& values) {
  RETURN_IF_ERROR(config.Validate());
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", error.message()));
  // Shards: the embedding, one per layer, then the final norm and the head.
  const std::vector<HfTensor> tensors = HfTensors(config);
  std::vector<std::vector<const HfTensor*>> shards(config.n_layers + 2);
  for (const HfTensor& t : tensors) {
    shards[t.layer >= 0 ? t.layer + 1 : (t.role == HfRole::kEmbedding ? 0 : config.n_layers + 1)].push_back(&t);
  }
  HfCheckpointReport report;
  report.shards = static_cast<int>(shards.size());
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
    std::vector<std::vector<float>> data;
    std::vector<safetensors::TensorToWrite> to_write;
    for (const HfTensor* t : shards[s]) {
      int64_t count = 1;
      for (int64_t d : t->shape) count *= d;
      data.push_back(values(*t));
      if (static_cast<int64_t>(data.back().size()) != count) {
        return absl::InvalidArgumentError(
            absl::StrCat(t->name, " has ", data.back().size(), " values, its shape needs ", count));
      }
      report.parameters += count;
      report.bytes += count * safetensors::DTypeSize(dtype);
      weight_map[t->name] = file;
    }
    for (size_t i = 0; i < shards[s].size(); ++i) {
      to_write.push_back({shards[s][i]->name, shards[s][i]->shape, data[i], dtype});
    }
    RETURN_IF_ERROR(safetensors::WriteFile((fs::path(dir) / file).string(), to_write, json{{"format", "pt"}}));
  }
  std::ofstream(fs::path(dir) / "model.safetensors.index.json")
      << json{{"metadata", {{"total_size", report.bytes}}}, {"weight_map", weight_map}}.dump(2);
  std::ofstream out(fs::path(dir) / "config.json");
  out << ConfigJson(config, dtype).dump(2);
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir, "/config.json"));
  return report;
}

absl::StatusOr<HfCheckpointReport> ExportHfCheckpoint(const ModelConfig& config, const ModelWeights& weights,
                                                      safetensors::DType dtype, const std::string& dir) {
  RETURN_IF_ERROR(ValidateWeights(config, weights));
  return WriteHfCheckpoint(config, dtype, dir, [&](const HfTensor& t) {
    const std::vector<float>& w = HfSource(t, weights);
    if (t.role == HfRole::kQ) return RotateHalfRows(w, config.n_heads, config.head_dim, config.dim);
    if (t.role == HfRole::kK) return RotateHalfRows(w, config.n_kv_heads, config.head_dim, config.dim);
    return w;
  });
}

}  // namespace medusa
