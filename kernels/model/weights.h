#pragma once
// Host-side Llama weights, row-major, as loaders hand them to a backend: norms
// in float32, matrices in float32 or kept as their file stores them
// (weight_format.h). A matrix [rows, cols] maps a vector of length `cols` to
// one of length `rows` (y = W x), the layout of llama2.c, GGUF and PyTorch's
// nn.Linear. RoPE convention: rotation of adjacent pairs (x[2i], x[2i+1])
// inside each head, as in llama2.c and GGUF "llama" files; loaders of other
// layouts permute Q/K rows to match.

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/model/config.h"
#include "kernels/model/weight_format.h"

namespace medusa {

// One matrix [rows, cols]: float32 values, or `bytes` in `type`'s layout
// (RowBytes per row).
struct WeightMatrix {
  WeightMatrix() = default;
  WeightMatrix(std::vector<float> floats) : values(std::move(floats)) {}  // NOLINT: float32 is the plain case

  WeightType type = WeightType::kF32;
  std::vector<float> values;   // type kF32
  std::vector<uint8_t> bytes;  // other types

  bool empty() const { return values.empty() && bytes.empty(); }
  // Keeps the matrix as `target` (a [rows, cols] conversion; nothing when it
  // already is).
  void ConvertTo(WeightType target, int64_t rows, int64_t cols);
  // Its float32 values (a copy for the other types).
  std::vector<float> ToFloat(int64_t rows, int64_t cols) const;

  friend bool operator==(const WeightMatrix& a, const WeightMatrix& b) {
    return a.type == b.type && a.values == b.values && a.bytes == b.bytes;
  }
  friend bool operator!=(const WeightMatrix& a, const WeightMatrix& b) { return !(a == b); }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [dim]
  WeightMatrix wq;               // [n_heads*head_dim, dim]
  WeightMatrix wk;               // [n_kv_heads*head_dim, dim]
  WeightMatrix wv;               // [n_kv_heads*head_dim, dim]
  WeightMatrix wo;               // [dim, n_heads*head_dim]
  std::vector<float> ffn_norm;   // [dim]
  WeightMatrix w_gate;           // [hidden_dim, dim]   (llama2.c w1, GGUF ffn_gate)
  WeightMatrix w_down;           // [dim, hidden_dim]   (llama2.c w2, GGUF ffn_down)
  WeightMatrix w_up;             // [hidden_dim, dim]   (llama2.c w3, GGUF ffn_up)
};

struct ModelWeights {
  WeightMatrix token_embedding;        // [vocab_size, dim]
  std::vector<LayerWeights> layers;    // n_layers
  std::vector<float> final_norm;       // [dim]
  WeightMatrix classifier;             // [vocab_size, dim]; empty when tied to token_embedding
};

// Checks the config (ModelConfig::Validate) and that every weight has the size it says:
// InvalidArgument naming the weight ("layers[1].w_up") otherwise.
absl::Status ValidateWeights(const ModelConfig& config, const ModelWeights& weights);

// Converts every matrix to the type `mode` chooses for it (ChooseWeightType),
// one at a time.
void ConvertWeights(const ModelConfig& config, WeightMode mode, ModelWeights* weights);
// Every matrix as float32 (what a backend without kernels for the other types
// reads).
void ConvertWeightsToFloat(const ModelConfig& config, ModelWeights* weights);

}  // namespace medusa
