#include "engine/medusa/heads_file.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/io/load_guard.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace medusa {
namespace {

// Head tensors of a combined checkpoint (base model + heads) carry this prefix.
constexpr absl::string_view kCombinedPrefix = "medusa_head.";
// Far above any real head count; bounds what a corrupt name can make us loop over.
constexpr int kMaxIndex = 4096;

std::string LinearWeightName(int head, int layer) {
  return absl::StrCat(head, ".", layer, ".linear.weight");
}
std::string LinearBiasName(int head, int layer) {
  return absl::StrCat(head, ".", layer, ".linear.bias");
}
std::string ProjectionName(int head, int num_layers) {
  return absl::StrCat(head, ".", num_layers, ".weight");
}

// A decimal index without sign, spaces or leading zeros ("01" would alias "1").
bool ParseIndex(absl::string_view text, int* out) {
  if (text.empty() || text.size() > 6 || (text.size() > 1 && text[0] == '0')) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(text, out) && *out <= kMaxIndex;
}

enum class HeadTensorKind { kLinearWeight, kLinearBias, kProjection };

struct HeadTensorName {
  int head = 0;
  int index = 0;  // block index, or the projection's position after the blocks
  HeadTensorKind kind = HeadTensorKind::kLinearWeight;
};

// Parses `{head}.{layer}.linear.weight|bias` or `{head}.{index}.weight`.
bool ParseHeadTensorName(absl::string_view name, HeadTensorName* out) {
  std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
  if (parts.size() < 3 || !ParseIndex(parts[0], &out->head) || !ParseIndex(parts[1], &out->index)) {
    return false;
  }
  if (parts.size() == 4 && parts[2] == "linear" && parts[3] == "weight") {
    out->kind = HeadTensorKind::kLinearWeight;
    return true;
  }
  if (parts.size() == 4 && parts[2] == "linear" && parts[3] == "bias") {
    out->kind = HeadTensorKind::kLinearBias;
    return true;
  }
  if (parts.size() == 3 && parts[2] == "weight") {
    out->kind = HeadTensorKind::kProjection;
    return true;
  }
  return false;
}

// The tensor names found for one head, by index (file names, prefix included).
struct HeadTensorNames {
  std::map<int, std::string> weights;
  std::map<int, std::string> biases;
  std::map<int, std::string> projections;
};

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

class HeadsLoader {
 public:
  HeadsLoader(const safetensors::File& file, const ModelConfig& config)
      : file_(file), config_(config) {}

  absl::StatusOr<MedusaHeadsWeights> Load() {
    if (config_.dim <= 0 || config_.vocab_size <= 0) {
      return Invalid(absl::StrCat("the model config has dim ", config_.dim, " and vocab_size ",
                                  config_.vocab_size, "; both must be positive"));
    }
    RETURN_IF_ERROR(CollectNames());
    RETURN_IF_ERROR(CheckHeadNumbering());
    MedusaHeadsWeights weights;
    ASSIGN_OR_RETURN(weights.kind, ReadKind());
    weights.num_heads = static_cast<int>(heads_.size());
    weights.dim = config_.dim;
    weights.vocab = config_.vocab_size;
    weights.num_layers = -1;
    bool first_has_projection = false;
    for (int h = 0; h < weights.num_heads; ++h) {
      ASSIGN_OR_RETURN(int layers, CountLayers(h));
      const bool has_projection = !heads_[h].projections.empty();
      if (h == 0) {
        weights.num_layers = layers;
        first_has_projection = has_projection;
      } else if (layers != weights.num_layers) {
        return Invalid(absl::StrCat("head ", h, " has ", layers, " ResBlocks but head 0 has ", weights.num_layers,
                                    "; every head must have the same number"));
      } else if (has_projection != first_has_projection) {
        const int with = has_projection ? h : 0;
        const int without = has_projection ? 0 : h;
        return Invalid(absl::StrCat(
            "head ", with, " has its own vocabulary projection ('",
            heads_[with].projections.begin()->second, "') but head ", without,
            " has none; all heads must have one or none may"));
      }
    }
    if (weights.kind == HeadKind::kHydra && weights.num_layers < 1) {
      return Invalid("Hydra heads need at least one ResBlock (the first reads the path's tokens)");
    }
    weights.heads.resize(weights.num_heads);
    for (int h = 0; h < weights.num_heads; ++h) {
      RETURN_IF_ERROR(ReadHead(weights, h, &weights.heads[h]));
    }
    if (file_.metadata().contains(kDraftVocabKey)) {
      const nlohmann::json& text = file_.metadata()[kDraftVocabKey];
      if (!text.is_string()) return Invalid(absl::StrCat("metadata '", kDraftVocabKey, "' is not a string"));
      absl::StatusOr<std::vector<int32_t>> ids = DraftVocabFromText(text.get<std::string>(), config_.vocab_size);
      if (!ids.ok()) return Invalid(absl::StrCat("metadata '", kDraftVocabKey, "': ", ids.status().message()));
      weights.draft_vocab = *std::move(ids);
    }
    return weights;
  }

 private:
  absl::Status Invalid(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("Medusa heads '", file_.path(), "': ", what));
  }
  absl::StatusOr<HeadKind> ReadKind() const {
    if (!file_.metadata().contains(kHeadTypeKey)) return HeadKind::kMedusa;
    const nlohmann::json& type = file_.metadata()[kHeadTypeKey];
    if (type == kHeadTypeMedusa) return HeadKind::kMedusa;
    if (type == kHeadTypeHydra) return HeadKind::kHydra;
    return Invalid(absl::StrCat("metadata '", kHeadTypeKey, "' is ", JsonSnippet(type), "; expected \"",
                                kHeadTypeMedusa, "\" or \"", kHeadTypeHydra, "\""));
  }
  std::string FileName(const std::string& layout_name) const {
    return absl::StrCat(prefix_, layout_name);
  }

  absl::Status CollectNames() {
    for (const safetensors::TensorInfo& t : file_.tensors()) {
      if (absl::StartsWith(t.name, kCombinedPrefix)) {
        prefix_ = std::string(kCombinedPrefix);
        break;
      }
    }
    for (const safetensors::TensorInfo& t : file_.tensors()) {
      absl::string_view name = t.name;
      if (!absl::ConsumePrefix(&name, prefix_)) continue;  // base-model tensors of a combined file
      HeadTensorName parsed;
      if (!ParseHeadTensorName(name, &parsed)) {
        return Invalid(absl::StrCat("tensor '", TextSnippet(t.name), "' is not in the Medusa heads layout ",
                                    "('{head}.{layer}.linear.weight', '{head}.{layer}.linear.bias', "
                                    "'{head}.{num_layers}.weight')"));
      }
      HeadTensorNames& head = heads_[parsed.head];
      std::map<int, std::string>& slot =
          parsed.kind == HeadTensorKind::kLinearWeight ? head.weights
          : parsed.kind == HeadTensorKind::kLinearBias ? head.biases
                                                       : head.projections;
      slot[parsed.index] = t.name;
    }
    if (heads_.empty()) {
      return Invalid("the file holds no Medusa head tensors ('{head}.{layer}.linear.weight', ...)");
    }
    return absl::OkStatus();
  }

  // Heads must be numbered 0..K-1.
  absl::Status CheckHeadNumbering() const {
    int expected = 0;
    for (const auto& [index, names] : heads_) {
      if (index != expected) {
        return Invalid(absl::StrCat("head numbering has a gap: no tensors for head ", expected,
                                    " but there are tensors for head ", index,
                                    " (heads must be numbered 0..K-1)"));
      }
      ++expected;
    }
    return absl::OkStatus();
  }

  // Blocks must be numbered 0..L-1, each with weight and bias; the projection, if any,
  // is index L. Returns L.
  absl::StatusOr<int> CountLayers(int h) const {
    const HeadTensorNames& names = heads_.at(h);
    int layers = 0;
    if (!names.weights.empty()) layers = std::max(layers, names.weights.rbegin()->first + 1);
    if (!names.biases.empty()) layers = std::max(layers, names.biases.rbegin()->first + 1);
    for (int l = 0; l < layers; ++l) {
      const bool has_weight = names.weights.contains(l);
      const bool has_bias = names.biases.contains(l);
      if (!has_weight && !has_bias) {
        return Invalid(absl::StrCat("head ", h, " has a gap in its ResBlock numbering: no '",
                                    FileName(LinearWeightName(h, l)), "' although block ",
                                    layers - 1, " exists"));
      }
      if (!has_weight) {
        return Invalid(absl::StrCat("missing tensor '", FileName(LinearWeightName(h, l)),
                                    "' (the weight of the ResBlock whose bias is '",
                                    names.biases.at(l), "')"));
      }
      if (!has_bias) {
        return Invalid(absl::StrCat("missing tensor '", FileName(LinearBiasName(h, l)),
                                    "' (the bias of the ResBlock whose weight is '",
                                    names.weights.at(l), "')"));
      }
    }
    if (names.projections.size() > 1) {
      return Invalid(absl::StrCat("head ", h, " has several projections: '",
                                  names.projections.begin()->second, "' and '",
                                  std::next(names.projections.begin())->second, "'"));
    }
    if (!names.projections.empty() && names.projections.begin()->first != layers) {
      return Invalid(absl::StrCat("tensor '", names.projections.begin()->second,
                                  "' would be head ", h, "'s vocabulary projection, but that comes "
                                  "after its ", layers, " ResBlocks, as '",
                                  FileName(ProjectionName(h, layers)), "'"));
    }
    return layers;
  }

  absl::Status ReadChecked(const std::string& name, const std::vector<int64_t>& want,
                           const std::string& why, std::vector<float>* out) const {
    const safetensors::TensorInfo* info = file_.FindTensor(name);
    if (info == nullptr) return Invalid(absl::StrCat("missing tensor '", name, "'"));
    if (info->shape != want) {
      return Invalid(absl::StrCat("tensor '", name, "' has shape ", ShapeString(info->shape),
                                  ", expected ", ShapeString(want), " (", why, ")"));
    }
    return file_.ReadTensor(name, out);
  }

  absl::Status ReadHead(const MedusaHeadsWeights& weights, int h, MedusaHead* head) const {
    const int64_t dim = config_.dim;
    const std::string dims = absl::StrCat("the model's dim is ", dim);
    head->blocks.resize(weights.num_layers);
    for (int l = 0; l < weights.num_layers; ++l) {
      MedusaResBlock& block = head->blocks[l];
      const int64_t inputs = weights.BlockInputs(h, l);
      const std::string why = inputs == dim ? dims
                                            : absl::StrCat(dims, "; Hydra head ", h, "'s first block reads h and ",
                                                           h + 1, " token embeddings");
      RETURN_IF_ERROR(ReadChecked(FileName(LinearWeightName(h, l)), {dim, inputs}, why, &block.weight));
      RETURN_IF_ERROR(ReadChecked(FileName(LinearBiasName(h, l)), {dim}, dims, &block.bias));
    }
    if (!heads_.at(h).projections.empty()) {
      return ReadChecked(heads_.at(h).projections.begin()->second, {config_.vocab_size, dim},
                         absl::StrCat("the model's vocab_size is ", config_.vocab_size,
                                      " and dim is ", dim),
                         &head->projection);
    }
    return absl::OkStatus();
  }

  const safetensors::File& file_;
  const ModelConfig& config_;
  std::string prefix_;                      // "medusa_head." in a combined checkpoint
  std::map<int, HeadTensorNames> heads_;    // by head index
};

}  // namespace

std::string BesideHeads(const std::string& heads_path, std::string_view suffix) {
  constexpr std::string_view kExtension = ".safetensors";
  std::string stem = heads_path;
  if (stem.size() > kExtension.size() && stem.ends_with(kExtension)) stem.resize(stem.size() - kExtension.size());
  return stem.append(suffix);
}

std::string DraftVocabToText(absl::Span<const int32_t> ids) { return absl::StrJoin(ids, " "); }

absl::StatusOr<std::vector<int32_t>> DraftVocabFromText(const std::string& text, int vocab) {
  std::vector<int32_t> ids;
  std::vector<bool> seen(std::max(vocab, 0), false);
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(word, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("'", word, "' is not a token id"));
    }
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", id, " is outside the model's vocabulary [0, ", vocab, ")"));
    }
    if (seen[id]) return absl::InvalidArgumentError(absl::StrCat("token ", id, " is listed twice"));
    seen[id] = true;
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("no token ids");
  return ids;
}

absl::StatusOr<MedusaHeadsWeights> LoadMedusaHeads(const safetensors::File& file,
                                                   const ModelConfig& config) {
  return HeadsLoader(file, config).Load();
}

namespace {

// The published heads' config.json (FasterDecoding/Medusa: medusa_num_heads,
// medusa_num_layers, base_model_name_or_path) beside the heads file, when there is one that
// says something of heads: its counts must be the file's. A model's own config.json (no
// medusa_ keys) is not the heads' and says nothing here.
absl::Status CheckPublishedConfig(const std::string& path, const MedusaHeadsWeights& heads) {
  const std::filesystem::path config_path = std::filesystem::path(path).parent_path() / "config.json";
  absl::StatusOr<std::string> text = ReadFileBounded(config_path.string(), kMaxJsonConfigBytes, "heads config");
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  if (!text.ok()) return text.status();
  ASSIGN_OR_RETURN(const nlohmann::json config, ParseJson(*text, config_path.string()));
  if (!config.is_object() || !config.contains("medusa_num_heads")) return absl::OkStatus();
  for (const auto& [key, count] : {std::pair{"medusa_num_heads", heads.num_heads},
                                   std::pair{"medusa_num_layers", heads.num_layers}}) {
    if (!config.contains(key)) continue;
    if (!config[key].is_number_integer() || config[key].get<int64_t>() != count) {
      return absl::InvalidArgumentError(absl::StrCat("Medusa heads '", path, "': ", config_path.string(), " says ", key,
                                                     " = ", JsonSnippet(config[key]), " but the file has ", count));
    }
  }
  if (config.contains("base_model_name_or_path") && config["base_model_name_or_path"].is_string()) {
    spdlog::info("Medusa heads '{}' were trained for {}", path, config["base_model_name_or_path"].get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<MedusaHeadsWeights> LoadMedusaHeads(const std::string& path,
                                                   const ModelConfig& config) {
  return GuardLoad(absl::StrCat("Medusa heads '", path, "'"), [&]() -> absl::StatusOr<MedusaHeadsWeights> {
    ASSIGN_OR_RETURN(std::unique_ptr<safetensors::File> file, safetensors::File::Open(path));
    ASSIGN_OR_RETURN(MedusaHeadsWeights heads, LoadMedusaHeads(*file, config));
    RETURN_IF_ERROR(CheckPublishedConfig(path, heads));
    return heads;
  });
}

absl::Status SaveMedusaHeads(const std::string& path, const MedusaHeadsWeights& weights,
                             const nlohmann::json& metadata, safetensors::DType dtype) {
  RETURN_IF_ERROR(weights.Validate());
  if (!metadata.is_null() && !metadata.is_object()) {
    return absl::InvalidArgumentError("Medusa heads metadata must be a JSON object");
  }
  nlohmann::json meta = metadata.is_null() ? nlohmann::json::object() : metadata;
  if (!meta.contains("medusa_num_heads")) meta["medusa_num_heads"] = std::to_string(weights.num_heads);
  if (!meta.contains("medusa_num_layers")) {
    meta["medusa_num_layers"] = std::to_string(weights.num_layers);
  }
  if (!weights.draft_vocab.empty()) meta[kDraftVocabKey] = DraftVocabToText(weights.draft_vocab);
  // The weights' own type, whatever the caller's metadata says; Medusa heads' files name none, as
  // the reference's.
  meta.erase(kHeadTypeKey);
  if (weights.kind == HeadKind::kHydra) meta[kHeadTypeKey] = kHeadTypeHydra;
  const int64_t dim = weights.dim;
  std::vector<safetensors::TensorToWrite> tensors;
  for (int h = 0; h < weights.num_heads; ++h) {
    const MedusaHead& head = weights.heads[h];
    for (int l = 0; l < weights.num_layers; ++l) {
      tensors.push_back({LinearWeightName(h, l), {dim, weights.BlockInputs(h, l)}, head.blocks[l].weight, dtype});
      tensors.push_back({LinearBiasName(h, l), {dim}, head.blocks[l].bias, dtype});
    }
    if (weights.has_projection()) {
      tensors.push_back({ProjectionName(h, weights.num_layers), {weights.vocab, dim},
                         head.projection, dtype});
    }
  }
  return safetensors::WriteFile(path, tensors, meta);
}

}  // namespace medusa
