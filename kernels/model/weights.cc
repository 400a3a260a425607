#include "kernels/model/weights.h"

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

}  // namespace

absl::Status ValidateWeights(const ModelConfig& c, const ModelWeights& w) {
  RETURN_IF_ERROR(c.Validate());
  const size_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  const size_t vocab = c.vocab_size;
  RETURN_IF_ERROR(CheckSize(w.token_embedding, vocab * dim, "token_embedding"));
  RETURN_IF_ERROR(CheckSize(w.final_norm, dim, "final_norm"));
  if (!w.classifier.empty() || !c.tied_classifier) {
    RETURN_IF_ERROR(CheckSize(w.classifier, vocab * dim, "classifier"));
  }
  if (w.layers.size() != static_cast<size_t>(c.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights have ", w.layers.size(), " layers, config.n_layers is ", c.n_layers));
  }
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = absl::StrCat("layers[", l, "].");
    for (auto [v, size, name] : {std::tuple{&L.attn_norm, dim, "attn_norm"}, {&L.wq, q * dim, "wq"},
                                 {&L.wk, kv * dim, "wk"}, {&L.wv, kv * dim, "wv"}, {&L.wo, dim * q, "wo"},
                                 {&L.ffn_norm, dim, "ffn_norm"}, {&L.w_gate, hidden * dim, "w_gate"},
                                 {&L.w_down, dim * hidden, "w_down"}, {&L.w_up, hidden * dim, "w_up"}}) {
      RETURN_IF_ERROR(CheckSize(*v, size, p + name));
    }
  }
  return absl::OkStatus();
}

}  // namespace medusa
