#pragma once
// A random Llama model and a plain float64 forward written from the definition (no code
// shared with any backend): the reference every backend's numerics are checked against.

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/model/config.h"
#include "kernels/model/weights.h"

namespace medusa::testing {

// A config with head_dim = dim / heads, 256 positions, eps 1e-5, theta 10000.
ModelConfig SmallConfig(int dim, int hidden, int layers, int heads, int kv_heads, int vocab);

// n values uniform in [lo, hi).
std::vector<float> Uniform(std::mt19937* rng, size_t n, float lo, float hi);

// Matrices scaled by 1/sqrt(fan-in) so activations stay O(1) through the layers; norm
// weights near 1. Same config and seed, same weights.
ModelWeights RandomWeights(const ModelConfig& c, uint32_t seed);

struct RefOutput {
  std::vector<std::vector<double>> logits;  // per position
  std::vector<std::vector<double>> hidden;  // final-normed, per position
};

// One causal sequence, token by token, at positions 0, 1, 2, ...
RefOutput RefForward(const ModelConfig& c, const ModelWeights& w, const std::vector<int>& tokens);

// Largest |a - b| over the largest |b| (at least 1): the error relative to the logit scale.
double RelativeError(const float* a, const std::vector<double>& b);
double RelativeError(const float* a, const float* b, size_t n);

}  // namespace medusa::testing
