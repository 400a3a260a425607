#include "engine/model/hf_layout.h"

#include "absl/strings/str_cat.h"

namespace medusa {

std::vector<HfTensor> HfTensors(const ModelConfig& c) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim(), vocab = c.vocab_size;
  std::vector<HfTensor> tensors = {{"model.embed_tokens.weight", {vocab, dim}, HfRole::kEmbedding}};
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string l = absl::StrCat("model.layers.", i, ".");
    for (HfTensor t : std::vector<HfTensor>{{"input_layernorm.weight", {dim}, HfRole::kAttnNorm},
                                            {"self_attn.q_proj.weight", {q, dim}, HfRole::kQ},
                                            {"self_attn.k_proj.weight", {kv, dim}, HfRole::kK},
                                            {"self_attn.v_proj.weight", {kv, dim}, HfRole::kV},
                                            {"self_attn.o_proj.weight", {dim, q}, HfRole::kO},
                                            {"post_attention_layernorm.weight", {dim}, HfRole::kFfnNorm},
                                            {"mlp.gate_proj.weight", {hidden, dim}, HfRole::kGate},
                                            {"mlp.up_proj.weight", {hidden, dim}, HfRole::kUp},
                                            {"mlp.down_proj.weight", {dim, hidden}, HfRole::kDown}}) {
      t.name = l + t.name;
      t.layer = i;
      tensors.push_back(std::move(t));
    }
  }
  tensors.push_back({"model.norm.weight", {dim}, HfRole::kFinalNorm});
  if (!c.tied_classifier) tensors.push_back({"lm_head.weight", {vocab, dim}, HfRole::kHead});
  return tensors;
}

std::vector<float>* HfDestination(const HfTensor& t, ModelWeights* w) {
  switch (t.role) {
    case HfRole::kEmbedding:
      return &w->token_embedding.values;
    case HfRole::kFinalNorm:
      return &w->final_norm;
    case HfRole::kHead:
      return &w->classifier.values;
    default:
      break;
  }
  LayerWeights& l = w->layers[t.layer];
  switch (t.role) {
    case HfRole::kAttnNorm:
      return &l.attn_norm;
    case HfRole::kQ:
      return &l.wq.values;
    case HfRole::kK:
      return &l.wk.values;
    case HfRole::kV:
      return &l.wv.values;
    case HfRole::kO:
      return &l.wo.values;
    case HfRole::kFfnNorm:
      return &l.ffn_norm;
    case HfRole::kGate:
      return &l.w_gate.values;
    case HfRole::kUp:
      return &l.w_up.values;
    default:
      return &l.w_down.values;
  }
}

WeightMatrix* HfMatrixDestination(const HfTensor& tensor, ModelWeights* weights) {
  const std::vector<float>* values = HfDestination(tensor, weights);
  if (&weights->token_embedding.values == values) return &weights->token_embedding;
  if (&weights->classifier.values == values) return &weights->classifier;
  if (tensor.layer < 0) return nullptr;
  LayerWeights& l = weights->layers[tensor.layer];
  for (WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
    if (&m->values == values) return m;
  }
  return nullptr;
}

const std::vector<float>& HfSource(const HfTensor& tensor, const ModelWeights& weights) {
  // HfDestination only finds the vector; nothing is written through it.
  return *HfDestination(tensor, const_cast<ModelWeights*>(&weights));
}

}  // namespace medusa
