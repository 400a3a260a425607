#pragma once
// Host-side Llama weights in the compute type (float32), row-major, as loaders hand them
// to a backend. A matrix [rows, cols] maps a vector of length `cols` to one of length
// `rows` (y = W x), the layout of llama2.c, GGUF and PyTorch's nn.Linear.
// RoPE convention: rotation of adjacent pairs (x[2i], x[2i+1]) inside each head, as in
// llama2.c and GGUF "llama" files; loaders of other layouts permute Q/K rows to match.

#include <vector>

#include "absl/status/status.h"
#include "kernels/model/config.h"

namespace medusa {

struct LayerWeights {
  std::vector<float> attn_norm;  // [dim]
  std::vector<float> wq;         // [n_heads*head_dim, dim]
  std::vector<float> wk;         // [n_kv_heads*head_dim, dim]
  std::vector<float> wv;         // [n_kv_heads*head_dim, dim]
  std::vector<float> wo;         // [dim, n_heads*head_dim]
  std::vector<float> ffn_norm;   // [dim]
  std::vector<float> w_gate;     // [hidden_dim, dim]   (llama2.c w1, GGUF ffn_gate)
  std::vector<float> w_down;     // [dim, hidden_dim]   (llama2.c w2, GGUF ffn_down)
  std::vector<float> w_up;       // [hidden_dim, dim]   (llama2.c w3, GGUF ffn_up)
};

struct ModelWeights {
  std::vector<float> token_embedding;  // [vocab_size, dim]
  std::vector<LayerWeights> layers;    // n_layers
  std::vector<float> final_norm;       // [dim]
  std::vector<float> classifier;       // [vocab_size, dim]; empty when tied to token_embedding
};

// Checks the config (ModelConfig::Validate) and that every weight has the size it says:
// InvalidArgument naming the weight ("layers[1].w_up") otherwise.
absl::Status ValidateWeights(const ModelConfig& config, const ModelWeights& weights);

}  // namespace medusa
