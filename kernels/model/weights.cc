#include "kernels/model/weights.h"

#include <functional>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

absl::Status CheckSize(const std::vector<float>& v, size_t expected, const std::string& name) {
  if (v.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight ", name, " has ", v.size(), " floats, expected ", expected));
  }
  return absl::OkStatus();
}

absl::Status CheckMatrix(const WeightMatrix& m, size_t rows, size_t cols, const std::string& name) {
  if (m.type == WeightType::kF32) {
    if (!m.bytes.empty()) return absl::InvalidArgumentError(absl::StrCat("weight ", name, " is f32 but has bytes"));
    return CheckSize(m.values, rows * cols, name);
  }
  if (!m.values.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("weight ", name, " is ", WeightTypeName(m.type), " but has floats"));
  }
  if (!FitsBlocks(m.type, static_cast<int64_t>(cols))) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight ", name, " has rows of ", cols, " values, not whole blocks of ", WeightTypeName(m.type)));
  }
  const size_t expected = rows * RowBytes(m.type, static_cast<int64_t>(cols));
  if (m.bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("weight ", name, " has ", m.bytes.size(), " bytes of ",
                                                   WeightTypeName(m.type), ", expected ", expected));
  }
  return absl::OkStatus();
}

// Calls `fn(matrix, rows, cols)` for every matrix of the model.
void ForEachMatrix(const ModelConfig& c, ModelWeights* w,
                   const std::function<void(WeightMatrix*, int64_t, int64_t)>& fn) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim(), vocab = c.vocab_size;
  fn(&w->token_embedding, vocab, dim);
  for (LayerWeights& L : w->layers) {
    fn(&L.wq, q, dim);
    fn(&L.wk, kv, dim);
    fn(&L.wv, kv, dim);
    fn(&L.wo, dim, q);
    fn(&L.w_gate, hidden, dim);
    fn(&L.w_down, dim, hidden);
    fn(&L.w_up, hidden, dim);
  }
  if (!w->classifier.empty()) fn(&w->classifier, vocab, dim);
}

}  // namespace

void WeightMatrix::ConvertTo(WeightType target, int64_t rows, int64_t cols) {
  if (target == type) return;
  if (type != WeightType::kF32) {
    values = DequantizeMatrix(type, bytes.data(), rows, cols);
    std::vector<uint8_t>().swap(bytes);
    type = WeightType::kF32;
  }
  if (target != WeightType::kF32) {
    bytes = QuantizeMatrix(target, values.data(), rows, cols);
    std::vector<float>().swap(values);
    type = target;
  }
}

std::vector<float> WeightMatrix::ToFloat(int64_t rows, int64_t cols) const {
  if (type == WeightType::kF32) return values;
  return DequantizeMatrix(type, bytes.data(), rows, cols);
}

absl::Status ValidateWeights(const ModelConfig& c, const ModelWeights& w) {
  RETURN_IF_ERROR(c.Validate());
  const size_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  const size_t vocab = c.vocab_size;
  RETURN_IF_ERROR(CheckMatrix(w.token_embedding, vocab, dim, "token_embedding"));
  RETURN_IF_ERROR(CheckSize(w.final_norm, dim, "final_norm"));
  if (!w.classifier.empty() || !c.tied_classifier) {
    RETURN_IF_ERROR(CheckMatrix(w.classifier, vocab, dim, "classifier"));
  }
  if (w.layers.size() != static_cast<size_t>(c.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights have ", w.layers.size(), " layers, config.n_layers is ", c.n_layers));
  }
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = absl::StrCat("layers[", l, "].");
    RETURN_IF_ERROR(CheckSize(L.attn_norm, dim, p + "attn_norm"));
    RETURN_IF_ERROR(CheckSize(L.ffn_norm, dim, p + "ffn_norm"));
    for (auto [m, rows, cols, name] : {std::tuple{&L.wq, q, dim, "wq"},
                                       {&L.wk, kv, dim, "wk"},
                                       {&L.wv, kv, dim, "wv"},
                                       {&L.wo, dim, q, "wo"},
                                       {&L.w_gate, hidden, dim, "w_gate"},
                                       {&L.w_down, dim, hidden, "w_down"},
                                       {&L.w_up, hidden, dim, "w_up"}}) {
      RETURN_IF_ERROR(CheckMatrix(*m, rows, cols, p + name));
    }
  }
  return absl::OkStatus();
}

void ConvertWeights(const ModelConfig& config, WeightMode mode, ModelWeights* weights) {
  ForEachMatrix(config, weights, [mode](WeightMatrix* m, int64_t rows, int64_t cols) {
    m->ConvertTo(ChooseWeightType(mode, m->type, cols), rows, cols);
  });
}

void ConvertWeightsToFloat(const ModelConfig& config, ModelWeights* weights) {
  ForEachMatrix(config, weights,
                [](WeightMatrix* m, int64_t rows, int64_t cols) { m->ConvertTo(WeightType::kF32, rows, cols); });
}

}  // namespace medusa
