// GGUF "llama" models: configuration from the llama.* metadata, weights from the
// token_embd / blk.N.* / output_norm / output tensors, dequantized to float32.
//
// GGUF dims are in ggml order (dims[0] is the row length, i.e. the input features),
// so a tensor with dims [in, out] is exactly our row-major [out, in] matrix. Q and K
// rows are already in the adjacent-pair RoPE order (convert_hf_to_gguf permutes them),
// so no permutation is needed.

#include <cmath>
#include <filesystem>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/json_reader.h"
#include "engine/io/load_guard.h"
#include "engine/model/dequant.h"
#include "engine/model/loader.h"
#include "kernels/base/status_macros.h"
#include "spdlog/spdlog.h"

namespace medusa {
namespace {

// Every tensor the llama loader reads, with its expected ggml-order dims and destination.
struct PlannedTensor {
  std::string name;
  std::vector<int64_t> dims;
  std::vector<float>* norm;  // a vector read as float32, or
  WeightMatrix* matrix;      // a matrix kept as the WeightMode chooses
};

class GgufModelReader {
 public:
  GgufModelReader(const gguf::File& file, const std::string& path) : file_(file), path_(path) {}

  absl::StatusOr<ModelConfig> ReadConfig() const;
  absl::Status ReadWeights(const ModelConfig& config, WeightMode mode, ModelWeights* weights) const;

 private:
  absl::Status Invalid(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("GGUF model '", path_, "': ", message));
  }
  // A required positive integer that must fit in int; missing keys are an invalid model.
  absl::StatusOr<int> RequiredSize(const char* key) const;
  absl::StatusOr<int> OptionalSize(const char* key, int fallback) const;
  absl::StatusOr<int> VocabSize() const;
  absl::Status CheckRopeIsPlain() const;
  // That the tensor is there with these ggml-order dims.
  absl::Status CheckTensor(const std::string& name, const std::vector<int64_t>& expected_dims) const;
  absl::Status CheckConvertedSize(const std::vector<PlannedTensor>& plan, WeightMode mode) const;
  absl::Status ReadMatrix(const gguf::TensorInfo& info, WeightMode mode, WeightMatrix* out) const;

  const gguf::File& file_;
  const std::string& path_;
};

absl::StatusOr<int> GgufModelReader::RequiredSize(const char* key) const {
  if (!file_.Has(key)) return Invalid(absl::StrCat("missing required metadata key '", key, "'"));
  ASSIGN_OR_RETURN(int64_t v, file_.GetInt(key));
  if (v <= 0 || v > std::numeric_limits<int>::max()) {
    return Invalid(absl::StrCat("metadata key '", key, "' = ", v, " is not a positive size"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<int> GgufModelReader::OptionalSize(const char* key, int fallback) const {
  return file_.Has(key) ? RequiredSize(key) : fallback;
}

absl::StatusOr<int> GgufModelReader::VocabSize() const {
  if (file_.Has("llama.vocab_size")) return RequiredSize("llama.vocab_size");
  if (file_.Has("tokenizer.ggml.tokens")) {
    ASSIGN_OR_RETURN(uint64_t n, file_.ArrayLength("tokenizer.ggml.tokens"));
    if (n == 0 || n > static_cast<uint64_t>(std::numeric_limits<int>::max())) {
      return Invalid(absl::StrCat("tokenizer.ggml.tokens has ", n, " entries"));
    }
    return static_cast<int>(n);
  }
  return Invalid(
      "missing required metadata key 'llama.vocab_size' (and no 'tokenizer.ggml.tokens')");
}

// The engine implements plain RoPE; files asking for frequency scaling would run
// silently wrong, so they are refused.
absl::Status GgufModelReader::CheckRopeIsPlain() const {
  if (file_.Has("llama.rope.scaling.type")) {
    ASSIGN_OR_RETURN(std::string type, file_.GetString("llama.rope.scaling.type"));
    if (type != "none") {
      return absl::UnimplementedError(
          absl::StrCat("GGUF model '", path_, "': RoPE scaling '", TextSnippet(type), "' is not supported"));
    }
  }
  if (file_.FindTensor("rope_freqs.weight") != nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        "GGUF model '", path_, "': RoPE frequency factors (rope_freqs.weight) are not supported"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> GgufModelReader::ReadConfig() const {
  if (!file_.Has("general.architecture")) {
    return Invalid("missing required metadata key 'general.architecture'");
  }
  ASSIGN_OR_RETURN(std::string arch, file_.GetString("general.architecture"));
  if (arch != "llama") {
    return absl::UnimplementedError(absl::StrCat("GGUF model '", path_, "': architecture '", TextSnippet(arch),
                                                 "' is not supported (only 'llama')"));
  }
  ModelConfig c;
  c.architecture = arch;
  absl::StatusOr<std::string> name = file_.GetString("general.name");
  c.name = name.ok() ? *name : std::filesystem::path(path_).stem().string();

  const struct {
    const char* key;
    int* field;
  } required[] = {{"llama.context_length", &c.max_seq_len},
                  {"llama.embedding_length", &c.dim},
                  {"llama.block_count", &c.n_layers},
                  {"llama.feed_forward_length", &c.hidden_dim},
                  {"llama.attention.head_count", &c.n_heads}};
  for (const auto& r : required) {
    ASSIGN_OR_RETURN(int v, RequiredSize(r.key));
    *r.field = v;
  }
  ASSIGN_OR_RETURN(int kv_heads, OptionalSize("llama.attention.head_count_kv", c.n_heads));
  c.n_kv_heads = kv_heads;
  ASSIGN_OR_RETURN(int vocab, VocabSize());
  c.vocab_size = vocab;

  // head_dim: key_length when given, else dim / n_heads. Value heads and the rotated
  // part must match it: the engine has no partial rotary or distinct value width.
  if (!file_.Has("llama.attention.key_length") && c.dim % c.n_heads != 0) {
    return Invalid(absl::StrCat("embedding_length ", c.dim, " is not a multiple of head_count ",
                                c.n_heads, " and no llama.attention.key_length is given"));
  }
  ASSIGN_OR_RETURN(int head_dim, OptionalSize("llama.attention.key_length", c.dim / c.n_heads));
  c.head_dim = head_dim;
  for (const char* key : {"llama.attention.value_length", "llama.rope.dimension_count"}) {
    ASSIGN_OR_RETURN(int v, OptionalSize(key, c.head_dim));
    if (v != c.head_dim) {
      return absl::UnimplementedError(absl::StrCat("GGUF model '", path_, "': ", key, " = ", v,
                                                   " differs from the head size ", c.head_dim, " (not supported)"));
    }
  }

  if (!file_.Has("llama.attention.layer_norm_rms_epsilon")) {
    return Invalid("missing required metadata key 'llama.attention.layer_norm_rms_epsilon'");
  }
  ASSIGN_OR_RETURN(double eps, file_.GetFloat("llama.attention.layer_norm_rms_epsilon"));
  c.rms_eps = static_cast<float>(eps);
  c.rope_theta = 10000.0f;
  if (file_.Has("llama.rope.freq_base")) {
    ASSIGN_OR_RETURN(double theta, file_.GetFloat("llama.rope.freq_base"));
    c.rope_theta = static_cast<float>(theta);
  }
  RETURN_IF_ERROR(CheckRopeIsPlain());
  c.tied_classifier = file_.FindTensor("output.weight") == nullptr;
  if (absl::Status s = c.Validate(); !s.ok()) return Invalid(s.message());
  return c;
}

absl::Status GgufModelReader::CheckTensor(const std::string& name, const std::vector<int64_t>& expected_dims) const {
  const gguf::TensorInfo* info = file_.FindTensor(name);
  if (info == nullptr) return Invalid(absl::StrCat("missing tensor '", name, "'"));
  if (info->dims != expected_dims) {
    return Invalid(absl::StrCat("tensor '", name, "' has shape [", absl::StrJoin(info->dims, ", "),
                                "], expected [", absl::StrJoin(expected_dims, ", "),
                                "] (ggml order: row length first)"));
  }
  return absl::OkStatus();
}

std::vector<PlannedTensor> PlanTensors(const ModelConfig& c, ModelWeights* w) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  const int64_t vocab = c.vocab_size;
  std::vector<PlannedTensor> plan = {{"token_embd.weight", {dim, vocab}, nullptr, &w->token_embedding}};
  w->layers.resize(c.n_layers);
  for (int i = 0; i < c.n_layers; ++i) {
    LayerWeights& l = w->layers[i];
    const std::string blk = absl::StrCat("blk.", i, ".");
    plan.push_back({blk + "attn_norm.weight", {dim}, &l.attn_norm, nullptr});
    plan.push_back({blk + "ffn_norm.weight", {dim}, &l.ffn_norm, nullptr});
    const struct {
      const char* name;
      std::vector<int64_t> dims;
      WeightMatrix* out;
    } matrices[] = {
        {"attn_q", {dim, q}, &l.wq},
        {"attn_k", {dim, kv}, &l.wk},
        {"attn_v", {dim, kv}, &l.wv},
        {"attn_output", {q, dim}, &l.wo},
        {"ffn_gate", {dim, hidden}, &l.w_gate},
        {"ffn_down", {hidden, dim}, &l.w_down},
        {"ffn_up", {dim, hidden}, &l.w_up},
    };
    for (const auto& t : matrices) plan.push_back({absl::StrCat(blk, t.name, ".weight"), t.dims, nullptr, t.out});
  }
  plan.push_back({"output_norm.weight", {dim}, &w->final_norm, nullptr});
  if (!c.tied_classifier) plan.push_back({"output.weight", {dim, vocab}, nullptr, &w->classifier});
  return plan;
}

// The bytes the plan will allocate (float32, or the file's own size where a
// matrix is kept as stored), summed without overflow, against the memory
// available, before anything is allocated.
absl::Status GgufModelReader::CheckConvertedSize(const std::vector<PlannedTensor>& plan, WeightMode mode) const {
  uint64_t total = 0;
  for (const PlannedTensor& t : plan) {
    uint64_t bytes = sizeof(float);
    if (t.matrix != nullptr && mode != WeightMode::kF32) bytes = 2;  // at most 16 bits a weight
    for (int64_t d : t.dims) {
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
        return Invalid(absl::StrCat("tensor '", t.name, "' is too large to convert"));
      }
    }
    if (__builtin_add_overflow(total, bytes, &total)) return Invalid("the weights are too large to convert");
  }
  return CheckBytesFitInMemory(total,
                               absl::StrCat("GGUF model '", path_, "' (its weights as ", WeightModeName(mode), ")"));
}

// A matrix kept as stored is a copy of the file's bytes; any other conversion
// goes through float32.
absl::Status GgufModelReader::ReadMatrix(const gguf::TensorInfo& info, WeightMode mode, WeightMatrix* out) const {
  const int64_t cols = info.dims[0], rows = info.dims[1];
  const WeightType stored = gguf::ToWeightType(info.type);
  const WeightType target = ChooseWeightType(mode, stored, cols);
  if (target == stored && stored != WeightType::kF32) {
    ASSIGN_OR_RETURN(const uint8_t* data, file_.TensorData(info));
    out->type = stored;
    out->bytes.assign(data, data + RowBytes(stored, cols) * static_cast<size_t>(rows));
    return file_.CheckIntact();
  }
  RETURN_IF_ERROR(file_.ReadTensor(info, &out->values));
  out->ConvertTo(target, rows, cols);
  return absl::OkStatus();
}

absl::Status GgufModelReader::ReadWeights(const ModelConfig& c, WeightMode mode, ModelWeights* w) const {
  const std::vector<PlannedTensor> plan = PlanTensors(c, w);
  // Every name and shape first, then the memory they need: a broken or oversized file fails
  // before anything is converted.
  for (const PlannedTensor& t : plan) RETURN_IF_ERROR(CheckTensor(t.name, t.dims));
  RETURN_IF_ERROR(CheckConvertedSize(plan, mode));
  for (const PlannedTensor& t : plan) {
    const gguf::TensorInfo& info = *file_.FindTensor(t.name);
    RETURN_IF_ERROR(t.matrix != nullptr ? ReadMatrix(info, mode, t.matrix) : file_.ReadTensor(info, t.norm));
  }
  return absl::OkStatus();
}

// Tensors that are neither read nor known to be harmless are worth a warning: a
// file with, say, attention biases would otherwise run silently wrong.
void WarnAboutUnusedTensors(const gguf::File& file, const ModelConfig& c, const std::string& path) {
  const size_t used = 2 + 9 * static_cast<size_t>(c.n_layers) + (c.tied_classifier ? 0 : 1);
  if (file.tensors().size() > used) {
    spdlog::warn("GGUF model '{}': {} tensors are not used by the llama loader", path,
                 file.tensors().size() - used);
  }
}

}  // namespace

absl::StatusOr<LoadedModel> LoadGguf(const std::string& path, WeightMode mode) {
  return GuardLoad(absl::StrCat("GGUF model '", path, "'"), [&]() -> absl::StatusOr<LoadedModel> {
    ASSIGN_OR_RETURN(std::unique_ptr<gguf::File> file, gguf::File::Open(path));
    GgufModelReader reader(*file, path);
    ASSIGN_OR_RETURN(ModelConfig config, reader.ReadConfig());
    LoadedModel model{ModelFormat::kGguf, config, {}, nullptr};
    RETURN_IF_ERROR(reader.ReadWeights(config, mode, &model.weights));
    RETURN_IF_ERROR(file->CheckIntact());
    WarnAboutUnusedTensors(*file, config, path);
    model.gguf = std::move(file);
    return model;
  });
}

}  // namespace medusa
