#pragma once
// What the heads trainers' tests share: seeded normal vectors, heads' parameters in double for
// an independent reference loss, and the comparison of analytic gradients with central
// differences of that loss.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/model/medusa_heads_weights.h"

namespace medusa::testing {

// n values from N(0, scale^2), seeded.
std::vector<float> RandomVector(size_t n, uint64_t seed, float scale);

// The heads' parameters in double, so a reference loss and its central differences carry no
// float32 rounding. Block weights keep their [dim, inputs] layout (Hydra heads' wider first blocks too).
struct DoubleHeads {
  int heads, layers, dim, vocab;
  std::vector<std::vector<std::vector<double>>> w, b;  // [head][layer][...]
  std::vector<std::vector<double>> p;                  // [head][vocab * dim]: own projection or the classifier
};
DoubleHeads ToDouble(const MedusaHeadsWeights& f, const std::vector<float>& classifier);

// Checks every entry of `analytic` against (loss(param + eps) - loss(param - eps)) / 2 eps, and
// that some gradient is far from zero (else the check proves nothing).
void CheckTensor(const std::string& what, const std::vector<float>& analytic, std::vector<double>& param,
                 const std::function<double()>& loss);

}  // namespace medusa::testing
