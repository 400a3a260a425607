#pragma once
// What the heads trainers' tests share: seeded normal vectors, heads' parameters in double for
// an independent reference loss, and the comparison of analytic gradients with central
// differences of that loss.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/train/distill_set.h"
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

// The column of `target` in logits over `draft` (its position there; the token itself when
// `draft` is empty), or -1 when the target is past the text's end (-1) or outside the draft.
int DraftColumn(int32_t target, const std::vector<int32_t>& draft);

// log sum_i exp(x_i), shifted by the largest x.
double LogSumExp(const std::vector<double>& x);

// Head k's logits on row `row` of `data`, written plainly in double: its blocks r = r + SiLU(W x + b)
// (x = r; for Hydra heads (`embedding` not empty) the first block reads [h, E(path tokens)], a
// token past the text's end reading zeros), then its projection over `draft`'s columns (all
// of them when empty).
std::vector<double> ReferenceLogits(const DoubleHeads& h, const DistillSet& data, int64_t row, int k,
                                    const std::vector<float>& embedding, const std::vector<int32_t>& draft);

// Checks every entry of `analytic` against (loss(param + eps) - loss(param - eps)) / 2 eps, and
// that some gradient is far from zero (else the check proves nothing).
void CheckTensor(const std::string& what, const std::vector<float>& analytic, std::vector<double>& param,
                 const std::function<double()>& loss);

}  // namespace medusa::testing
