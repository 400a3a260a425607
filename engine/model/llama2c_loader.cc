// llama2.c checkpoints (Karpathy's "legacy" export, version 0): a header of seven
// int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), then
// float32 tensors in run.c's order. A negative vocab_size means the classifier is
// stored separately at the end instead of being shared with the token embedding.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/io/load_guard.h"
#include "engine/model/loader.h"
#include "engine/model/mapped_file.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

struct Llama2cHeader {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};
static_assert(sizeof(Llama2cHeader) == 28);

absl::Status Invalid(const std::string& path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("llama2.c checkpoint '", path, "': ", message));
}

// Checks the raw header and turns it into a config (sizes validated, so every
// tensor size below fits comfortably in int64).
absl::StatusOr<ModelConfig> ConfigFromHeader(const Llama2cHeader& h, const std::string& path) {
  const struct {
    const char* field;
    int32_t value;
  } fields[] = {{"dim", h.dim},         {"hidden_dim", h.hidden_dim}, {"n_layers", h.n_layers},
                {"n_heads", h.n_heads}, {"n_kv_heads", h.n_kv_heads}, {"seq_len", h.seq_len}};
  for (const auto& f : fields) {
    if (f.value <= 0) {
      return Invalid(
          path, absl::StrCat("header field ", f.field, " must be positive (got ", f.value, ")"));
    }
  }
  if (h.vocab_size == 0 || h.vocab_size == std::numeric_limits<int32_t>::min()) {
    return Invalid(path,
                   absl::StrCat("header field vocab_size is invalid (got ", h.vocab_size, ")"));
  }
  if (h.dim % h.n_heads != 0) {
    return Invalid(
        path, absl::StrCat("dim (", h.dim, ") is not a multiple of n_heads (", h.n_heads, ")"));
  }
  ModelConfig c;
  c.name = std::filesystem::path(path).stem().string();
  c.architecture = "llama";
  c.dim = h.dim;
  c.hidden_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.head_dim = h.dim / h.n_heads;
  c.vocab_size = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  c.tied_classifier = h.vocab_size > 0;
  c.max_seq_len = h.seq_len;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  if (absl::Status s = c.Validate(); !s.ok()) {
    return Invalid(path, absl::StrCat("inconsistent header: ", s.message()));
  }
  return c;
}

// Float counts of each tensor group, in file order.
struct Llama2cLayout {
  int64_t embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis, wcls;
  int64_t total_floats() const {
    return embedding + rms_att + wq + wk + wv + wo + rms_ffn + w1 + w2 + w3 + rms_final + freq_cis +
           wcls;
  }
};

Llama2cLayout LayoutOf(const ModelConfig& c) {
  const int64_t dim = c.dim, L = c.n_layers, hidden = c.hidden_dim, kv = c.kv_dim();
  Llama2cLayout l;
  l.embedding = int64_t{c.vocab_size} * dim;
  l.rms_att = L * dim;
  l.wq = L * dim * c.q_dim();
  l.wk = L * kv * dim;
  l.wv = L * kv * dim;
  l.wo = L * dim * c.q_dim();
  l.rms_ffn = L * dim;
  l.w1 = L * hidden * dim;
  l.w2 = L * dim * hidden;
  l.w3 = L * hidden * dim;
  l.rms_final = dim;
  l.freq_cis = int64_t{c.max_seq_len} * (c.head_dim / 2) * 2;  // real and imaginary parts
  l.wcls = c.tied_classifier ? 0 : l.embedding;
  return l;
}

// Copies consecutive floats out of the mapped file.
class FloatReader {
 public:
  explicit FloatReader(const uint8_t* p) : p_(p) {}
  std::vector<float> Take(int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    std::memcpy(out.data(), p_, static_cast<size_t>(n) * sizeof(float));
    p_ += n * sizeof(float);
    return out;
  }
  // Splits a [n_layers, per_layer] block across the layers.
  template <typename Member>
  void TakePerLayer(std::vector<LayerWeights>& layers, Member LayerWeights::*member, int64_t total) {
    const int64_t per_layer = total / static_cast<int64_t>(layers.size());
    for (LayerWeights& layer : layers) layer.*member = Take(per_layer);
  }
  void Skip(int64_t n) { p_ += n * sizeof(float); }

 private:
  const uint8_t* p_;
};

}  // namespace

namespace {

absl::StatusOr<LoadedModel> LoadLlama2cUnguarded(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const MappedFile& f = *file;
  if (f.size() < sizeof(Llama2cHeader)) {
    return Invalid(path, absl::StrCat("file is ", f.size(), " bytes, shorter than the ",
                                      sizeof(Llama2cHeader), "-byte header"));
  }
  if (std::memcmp(f.data(), "ak42", 4) == 0) {
    return absl::UnimplementedError(absl::StrCat("llama2.c checkpoint '", path,
                                                 "' uses the versioned export format (magic "
                                                 "\"ak42\"); only the legacy format is supported"));
  }
  Llama2cHeader header;
  std::memcpy(&header, f.data(), sizeof(header));
  ASSIGN_OR_RETURN(ModelConfig config, ConfigFromHeader(header, path));

  const Llama2cLayout layout = LayoutOf(config);
  const uint64_t expected =
      sizeof(Llama2cHeader) + static_cast<uint64_t>(layout.total_floats()) * sizeof(float);
  if (f.size() != expected) {
    const bool truncated = f.size() < expected;
    return Invalid(path, absl::StrCat("file is ", f.size(), " bytes but its header (dim ", config.dim, ", hidden_dim ",
                                      config.hidden_dim, ", n_layers ", config.n_layers, ", n_heads ", config.n_heads,
                                      ", n_kv_heads ", config.n_kv_heads, ", vocab_size ", header.vocab_size,
                                      ", seq_len ", config.max_seq_len, ") implies ", expected, " bytes: ",
                                      truncated ? absl::StrCat("truncated by ", expected - f.size(), " bytes")
                                                : absl::StrCat(f.size() - expected, " unexpected trailing bytes")));
  }

  // The float32 copies are the file's size (it was just checked against the header).
  RETURN_IF_ERROR(CheckBytesFitInMemory(f.size(), absl::StrCat("llama2.c checkpoint '", path, "'")));
  LoadedModel model{ModelFormat::kLlama2c, config, {}, nullptr};
  ModelWeights& w = model.weights;
  w.layers.resize(config.n_layers);
  FloatReader in(f.data() + sizeof(Llama2cHeader));
  w.token_embedding = in.Take(layout.embedding);
  in.TakePerLayer(w.layers, &LayerWeights::attn_norm, layout.rms_att);
  in.TakePerLayer(w.layers, &LayerWeights::wq, layout.wq);
  in.TakePerLayer(w.layers, &LayerWeights::wk, layout.wk);
  in.TakePerLayer(w.layers, &LayerWeights::wv, layout.wv);
  in.TakePerLayer(w.layers, &LayerWeights::wo, layout.wo);
  in.TakePerLayer(w.layers, &LayerWeights::ffn_norm, layout.rms_ffn);
  in.TakePerLayer(w.layers, &LayerWeights::w_gate, layout.w1);
  in.TakePerLayer(w.layers, &LayerWeights::w_down, layout.w2);
  in.TakePerLayer(w.layers, &LayerWeights::w_up, layout.w3);
  w.final_norm = in.Take(layout.rms_final);
  in.Skip(layout.freq_cis);  // RoPE tables: the engine computes its own from rope_theta
  if (!config.tied_classifier) w.classifier = in.Take(layout.wcls);
  RETURN_IF_ERROR(f.CheckIntact());  // truncated while copied: the copies hold zeros
  return model;
}

}  // namespace

absl::StatusOr<LoadedModel> LoadLlama2c(const std::string& path, WeightMode mode) {
  return GuardLoad(absl::StrCat("llama2.c checkpoint '", path, "'"), [&]() -> absl::StatusOr<LoadedModel> {
    ASSIGN_OR_RETURN(LoadedModel model, LoadLlama2cUnguarded(path));
    ConvertWeights(model.config, mode,
                   &model.weights);  // llama2.c stores float32
    return model;
  });
}

}  // namespace medusa
