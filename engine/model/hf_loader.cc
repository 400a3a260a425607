// Hugging Face Llama checkpoints: a directory with config.json and model.safetensors, or
// shards listed by model.safetensors.index.json (LlamaForCausalLM, MistralForCausalLM), in
// F32, F16 or BF16, converted to float32 one tensor at a time from the memory-mapped shards.
//
// Hugging Face stores Q and K rows for rotate-half RoPE (pair i of a head is dimensions i and
// i + head_dim / 2); the engine rotates adjacent pairs (2i, 2i + 1), as llama2.c and GGUF do.
// Each head's rows are interleaved at load: row 2i takes HF row i, row 2i + 1 takes HF row
// i + head_dim / 2, which is the permutation convert_hf_to_gguf applies.

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/io/load_guard.h"
#include "engine/model/hf_layout.h"
#include "engine/model/loader.h"
#include "engine/model/safetensors.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

absl::Status Invalid(const std::string& where, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("Hugging Face checkpoint '", where, "': ", message));
}

// Bounded and depth-checked (engine/io/json_reader.h).
absl::StatusOr<json> ReadJson(const fs::path& path) {
  return ReadJsonFile(path.string(), kMaxJsonConfigBytes, "Hugging Face checkpoint file");
}

// A required positive integer field of config.json.
absl::StatusOr<int> SizeField(const json& config, const char* key, const std::string& where) {
  if (!config.contains(key)) return Invalid(where, absl::StrCat("config.json has no '", key, "'"));
  const json& v = config[key];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > std::numeric_limits<int>::max()) {
    return Invalid(where, absl::StrCat("config.json '", key, "' = ", JsonSnippet(v), " is not a positive integer"));
  }
  return v.get<int>();
}

absl::StatusOr<float> NumberField(const json& config, const char* key, float fallback, const std::string& where) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_number()) {
    return Invalid(where, absl::StrCat("config.json '", key, "' = ", JsonSnippet(config[key]), " is not a number"));
  }
  return config[key].get<float>();
}

// RoPE: transformers 4 writes rope_theta and rope_scaling; transformers 5 one rope_parameters
// object holding both.
absl::Status ReadRope(const json& config, ModelConfig* c, const std::string& where) {
  const char* key = config.contains("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const json none = json::object();
  const json& rope = config.contains(key) && config[key].is_object() ? config[key] : none;
  ASSIGN_OR_RETURN(c->rope_theta,
                   NumberField(rope.contains("rope_theta") ? rope : config, "rope_theta", 10000.0f, where));
  const std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
  if (type == "default") return absl::OkStatus();
  if (type != "llama3") {
    return absl::UnimplementedError(absl::StrCat("Hugging Face checkpoint '", where, "': RoPE type '",
                                                 TextSnippet(type), "' is not supported (default and llama3 are)"));
  }
  ASSIGN_OR_RETURN(c->rope_scaling.factor, NumberField(rope, "factor", 0.0f, where));
  ASSIGN_OR_RETURN(c->rope_scaling.low_freq_factor, NumberField(rope, "low_freq_factor", 1.0f, where));
  ASSIGN_OR_RETURN(c->rope_scaling.high_freq_factor, NumberField(rope, "high_freq_factor", 4.0f, where));
  ASSIGN_OR_RETURN(c->rope_scaling.original_context, SizeField(rope, "original_max_position_embeddings", where));
  return absl::OkStatus();
}

// Which shard holds each tensor: the index's weight_map, or the one model.safetensors.
absl::StatusOr<std::map<std::string, std::string>> ShardOfEachTensor(const fs::path& dir,
                                                                     std::vector<std::string>* shards) {
  const fs::path index = dir / "model.safetensors.index.json";
  std::map<std::string, std::string> shard_of;
  if (fs::exists(index)) {
    ASSIGN_OR_RETURN(const json map, ReadJson(index));
    if (!map.contains("weight_map") || !map["weight_map"].is_object()) {
      return Invalid(dir.string(), "model.safetensors.index.json has no weight_map object");
    }
    for (const auto& [tensor, shard] : map["weight_map"].items()) {
      if (!shard.is_string() || fs::path(shard.get<std::string>()).has_parent_path()) {
        return Invalid(dir.string(),
                       absl::StrCat("weight_map entry '", tensor, "' is not a file name in the directory"));
      }
      shard_of[tensor] = shard.get<std::string>();
      if (std::find(shards->begin(), shards->end(), shard_of[tensor]) == shards->end()) {
        shards->push_back(shard_of[tensor]);
      }
    }
    return shard_of;
  }
  if (!fs::exists(dir / "model.safetensors")) {
    return absl::NotFoundError(absl::StrCat("Hugging Face checkpoint '", dir.string(),
                                            "': neither model.safetensors nor model.safetensors.index.json"));
  }
  shards->push_back("model.safetensors");
  return shard_of;  // empty: every tensor in the one file
}

// Interleaves each head's rows from rotate-half order into adjacent pairs (see the top).
void InterleaveRopeRows(int heads, int head_dim, int64_t cols, std::vector<float>* w) {
  std::vector<float> out(w->size());
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < half; ++i) {
      const float* first = w->data() + (static_cast<int64_t>(h) * head_dim + i) * cols;
      const float* second = w->data() + (static_cast<int64_t>(h) * head_dim + half + i) * cols;
      float* dst = out.data() + (static_cast<int64_t>(h) * head_dim + 2 * i) * cols;
      std::copy(first, first + cols, dst);
      std::copy(second, second + cols, dst + cols);
    }
  }
  w->swap(out);
}

class HfModelReader {
 public:
  explicit HfModelReader(fs::path dir) : dir_(std::move(dir)) {}

  absl::Status Open() {
    ASSIGN_OR_RETURN(shard_of_, ShardOfEachTensor(dir_, &shard_names_));
    for (const std::string& name : shard_names_) {
      ASSIGN_OR_RETURN(std::unique_ptr<safetensors::File> file, safetensors::File::Open((dir_ / name).string()));
      shards_[name] = std::move(file);
    }
    return absl::OkStatus();
  }

  bool Has(const std::string& name) const { return Find(name) != nullptr; }

  // That `name` is present with this shape (PyTorch order: [out, in]) and a dtype read as float.
  absl::Status Check(const std::string& name, const std::vector<int64_t>& shape) const {
    const safetensors::File* file = Find(name);
    if (file == nullptr) {
      const auto it = shard_of_.find(name);
      return Invalid(dir_.string(), it == shard_of_.end() ? absl::StrCat("missing tensor '", name, "'")
                                                          : absl::StrCat("tensor '", name, "' is not in ", it->second,
                                                                         " as model.safetensors.index.json says"));
    }
    const safetensors::TensorInfo* info = file->FindTensor(name);
    if (info->shape != shape) {
      return Invalid(dir_.string(),
                     absl::StrCat("tensor '", name, "' in ", fs::path(file->path()).filename().string(), " has shape [",
                                  absl::StrJoin(info->shape, ", "), "], expected [", absl::StrJoin(shape, ", "), "]"));
    }
    if (!safetensors::CanReadAsFloat(info->dtype)) {
      return absl::UnimplementedError(absl::StrCat("Hugging Face checkpoint '", dir_.string(), "': tensor '", name,
                                                   "' is ", info->dtype_name, " (F32, F16 and BF16 are read)"));
    }
    return absl::OkStatus();
  }

  // Reads `name` as float32 (Check first).
  absl::Status Read(const std::string& name, std::vector<float>* out) const {
    return Find(name)->ReadTensor(name, out);
  }

  // How the checkpoint stores `name` (Check first): BF16 or F16, else float32.
  WeightType StoredType(const std::string& name) const {
    switch (Find(name)->FindTensor(name)->dtype) {
      case safetensors::DType::kBF16:
        return WeightType::kBF16;
      case safetensors::DType::kF16:
        return WeightType::kF16;
      default:
        return WeightType::kF32;
    }
  }

  size_t tensor_count() const {
    size_t n = 0;
    for (const auto& [name, file] : shards_) n += file->tensors().size();
    return n;
  }

 private:
  const safetensors::File* Find(const std::string& name) const {
    if (shard_of_.empty()) {
      const safetensors::File* only = shards_.begin()->second.get();
      return only->FindTensor(name) != nullptr ? only : nullptr;
    }
    const auto it = shard_of_.find(name);
    if (it == shard_of_.end()) return nullptr;
    const safetensors::File* file = shards_.at(it->second).get();
    return file->FindTensor(name) != nullptr ? file : nullptr;
  }

  fs::path dir_;
  std::vector<std::string> shard_names_;
  std::map<std::string, std::string> shard_of_;
  std::map<std::string, std::unique_ptr<safetensors::File>> shards_;
};

absl::StatusOr<ModelConfig> ParseHuggingFaceConfigUnguarded(const nlohmann::json& config, const std::string& where) {
  if (!config.is_object()) return Invalid(where, "config.json is not an object");
  const std::string arch = config.contains("architectures") && config["architectures"].is_array() &&
                                   !config["architectures"].empty() && config["architectures"][0].is_string()
                               ? config["architectures"][0].get<std::string>()
                               : std::string();
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM") {
    return absl::UnimplementedError(absl::StrCat("Hugging Face checkpoint '", where, "': architecture '",
                                                 TextSnippet(arch),
                                                 "' is not supported (LlamaForCausalLM, MistralForCausalLM)"));
  }
  ModelConfig c;
  c.architecture = "llama";
  c.name = config.value("_name_or_path", std::string());
  if (c.name.empty()) c.name = fs::path(where).filename().string();
  const struct {
    const char* key;
    int* field;
  } sizes[] = {{"hidden_size", &c.dim},
               {"intermediate_size", &c.hidden_dim},
               {"num_hidden_layers", &c.n_layers},
               {"num_attention_heads", &c.n_heads},
               {"vocab_size", &c.vocab_size},
               {"max_position_embeddings", &c.max_seq_len}};
  for (const auto& s : sizes) {
    ASSIGN_OR_RETURN(*s.field, SizeField(config, s.key, where));
  }
  c.n_kv_heads = c.n_heads;
  if (config.contains("num_key_value_heads") && !config["num_key_value_heads"].is_null()) {
    ASSIGN_OR_RETURN(c.n_kv_heads, SizeField(config, "num_key_value_heads", where));
  }
  if (config.contains("head_dim") && !config["head_dim"].is_null()) {
    ASSIGN_OR_RETURN(c.head_dim, SizeField(config, "head_dim", where));
  } else if (c.dim % c.n_heads != 0) {
    return Invalid(where, absl::StrCat("hidden_size ", c.dim, " is not a multiple of num_attention_heads ", c.n_heads,
                                       " and no head_dim is given"));
  } else {
    c.head_dim = c.dim / c.n_heads;
  }
  ASSIGN_OR_RETURN(c.rms_eps, NumberField(config, "rms_norm_eps", 1e-6f, where));
  RETURN_IF_ERROR(ReadRope(config, &c, where));
  for (const char* unsupported : {"attention_bias", "mlp_bias"}) {
    if (config.value(unsupported, false)) {
      return absl::UnimplementedError(
          absl::StrCat("Hugging Face checkpoint '", where, "': ", unsupported, " is not supported"));
    }
  }
  if (config.contains("sliding_window") && config["sliding_window"].is_number_integer() &&
      config["sliding_window"].get<int64_t>() < c.max_seq_len) {
    // Attention past the window would differ from the model's: serve only what the window covers.
    c.max_seq_len = config["sliding_window"].get<int>();
  }
  c.tied_classifier = config.value("tie_word_embeddings", false);
  if (absl::Status s = c.Validate(); !s.ok()) return Invalid(where, s.message());
  return c;
}

absl::StatusOr<LoadedModel> LoadHuggingFaceUnguarded(const std::string& dir, WeightMode mode) {
  ASSIGN_OR_RETURN(const json config_json, ReadJson(fs::path(dir) / "config.json"));
  ASSIGN_OR_RETURN(ModelConfig config, ParseHuggingFaceConfig(config_json, dir));
  HfModelReader reader{fs::path(dir)};
  RETURN_IF_ERROR(reader.Open());
  LoadedModel model{ModelFormat::kHuggingFace, config, {}, nullptr};
  const std::vector<HfTensor> tensors = HfTensors(config);
  // Every name, shape and dtype first: a broken checkpoint fails before anything is read.
  for (const HfTensor& t : tensors) RETURN_IF_ERROR(reader.Check(t.name, t.shape));
  RETURN_IF_ERROR(CheckWeightsFitInMemory(config, absl::StrCat("Hugging Face checkpoint '", dir, "'"),
                                          mode == WeightMode::kF32 ? 4.0 : 2.0));
  model.weights.layers.resize(config.n_layers);
  // Each matrix is converted to the type it is kept in as soon as it is read,
  // so the checkpoint is never whole in float32 (a 7B BF16 model would not fit
  // in 24 GiB).
  for (const HfTensor& t : tensors) {
    std::vector<float>* values = HfDestination(t, &model.weights);
    RETURN_IF_ERROR(reader.Read(t.name, values));
    if (t.role == HfRole::kQ) InterleaveRopeRows(config.n_heads, config.head_dim, config.dim, values);
    if (t.role == HfRole::kK) InterleaveRopeRows(config.n_kv_heads, config.head_dim, config.dim, values);
    if (WeightMatrix* m = HfMatrixDestination(t, &model.weights); m != nullptr) {
      m->ConvertTo(ChooseWeightType(mode, reader.StoredType(t.name), t.shape[1]), t.shape[0], t.shape[1]);
    }
  }
  return model;
}

}  // namespace

absl::StatusOr<LoadedModel> LoadHuggingFace(const std::string& dir, WeightMode mode) {
  return GuardLoad(absl::StrCat("Hugging Face checkpoint '", dir, "'"),
                   [&] { return LoadHuggingFaceUnguarded(dir, mode); });
}

absl::StatusOr<ModelConfig> ParseHuggingFaceConfig(const nlohmann::json& config, const std::string& where) {
  // A field of an unexpected type makes nlohmann's accessors throw: an error, not a crash.
  return GuardLoad(absl::StrCat("Hugging Face checkpoint '", where, "': config.json"),
                   [&] { return ParseHuggingFaceConfigUnguarded(config, where); });
}

}  // namespace medusa
