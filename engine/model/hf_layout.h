#pragma once
// The tensors of a Hugging Face Llama checkpoint, in state-dict order: one list that the
// loader reads, the random-checkpoint writer writes and tests build checkpoints from.

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/model/config.h"
#include "kernels/model/weights.h"

namespace medusa {

enum class HfRole { kEmbedding, kAttnNorm, kQ, kK, kV, kO, kFfnNorm, kGate, kUp, kDown, kFinalNorm, kHead };

struct HfTensor {
  std::string name;            // "model.layers.3.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // PyTorch order: [out, in]
  HfRole role;
  int layer = -1;  // its layer, or -1 (embedding, final norm, head)
};

// Every tensor `config` needs: the embedding, each layer's nine, the final norm, and the head
// unless it is tied to the embedding.
std::vector<HfTensor> HfTensors(const ModelConfig& config);

// Where the tensor goes in `weights` (whose layers must already be sized).
std::vector<float>* HfDestination(const HfTensor& tensor, ModelWeights* weights);
// The matrix whose float32 values HfDestination gives; nullptr for the norms.
WeightMatrix* HfMatrixDestination(const HfTensor& tensor, ModelWeights* weights);
const std::vector<float>& HfSource(const HfTensor& tensor, const ModelWeights& weights);

}  // namespace medusa
