#pragma once
// Medusa heads with seeded random weights, for tests and benchmarks.

#include <cstdint>
#include <string>

#include "kernels/model/config.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa {

// Every value drawn from N(0, scale^2) (scale 0: all zeros). Same arguments, same weights.
// `kind` kHydra: sequentially dependent heads (wider first blocks).
MedusaHeadsWeights RandomMedusaHeads(const ModelConfig& config, int num_heads, int num_layers, bool with_projection,
                                     uint64_t seed, float scale, HeadKind kind = HeadKind::kMedusa);

namespace testing {

// Model config fields random heads need (dim, vocab), read from a model file without
// loading a GGUF's weights.
ModelConfig ConfigForHeads(const std::string& model_path);

// Seeded random heads (5 heads, 1 layer, the base model's classifier) for `model_path`,
// written to `path`.
void WriteRandomHeads(const std::string& model_path, const std::string& path);

}  // namespace testing
}  // namespace medusa
