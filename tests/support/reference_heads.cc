#include "tests/support/reference_heads.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

// y[r] = W[r, :] . x for a row-major W [rows, cols].
void MatVec(const float* w, const float* x, int rows, int cols, float* y) {
  for (int r = 0; r < rows; ++r) {
    const float* row = w + static_cast<int64_t>(r) * cols;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int c = 0; c < cols; ++c) acc += row[c] * x[c];
    y[r] = acc;
  }
}

}  // namespace

absl::Status ComputeHeadLogits(const MedusaHeadsWeights& weights,
                               absl::Span<const float> base_classifier,
                               absl::Span<const float> hidden, absl::Span<float> out,
                               std::vector<float>* scratch) {
  // Sizes only (a few comparisons): the loops below trust them.
  RETURN_IF_ERROR(weights.Validate());
  const int dim = weights.dim;
  const int vocab = weights.vocab;
  if (static_cast<int64_t>(hidden.size()) != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("Medusa heads: hidden state has ", hidden.size(), " values, expected ", dim));
  }
  if (vocab <= 0 || out.size() % vocab != 0 || out.size() / vocab > weights.heads.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Medusa heads: output has ", out.size(), " values, expected a multiple of vocab ", vocab,
        " for at most ", weights.heads.size(), " heads"));
  }
  if (!weights.has_projection() &&
      base_classifier.size() != static_cast<size_t>(vocab) * static_cast<size_t>(dim)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Medusa heads without their own projection need the base classifier [", vocab, ", ", dim,
        "], got ", base_classifier.size(), " values"));
  }
  const int rows = static_cast<int>(out.size() / vocab);
  std::vector<float> local;
  std::vector<float>& buffer = scratch != nullptr ? *scratch : local;
  const size_t need = static_cast<size_t>(rows + 1) * dim;
  if (buffer.size() < need) buffer.resize(need);
  float* t = buffer.data();  // one block's W h

  // Residual blocks: head k's final state goes to states + k * dim.
  float* states = buffer.data() + dim;
  for (int k = 0; k < rows; ++k) {
    float* h = states + static_cast<size_t>(k) * dim;
    std::copy(hidden.begin(), hidden.end(), h);
    for (const MedusaResBlock& block : weights.heads[k].blocks) {
      MatVec(block.weight.data(), h, dim, dim, t);
      for (int i = 0; i < dim; ++i) {
        const float z = t[i] + block.bias[i];
        h[i] += z / (1.0f + std::exp(-z));  // SiLU
      }
    }
  }

  // Projections. Heads sharing the base classifier take it in one pass (each row
  // against every head's state while it is in cache): the classifier is the largest
  // matrix of the model, and reading it once instead of once per head is what makes
  // this memory-bound product fast.
  if (weights.has_projection()) {
    for (int k = 0; k < rows; ++k) {
      MatVec(weights.heads[k].projection.data(), states + static_cast<size_t>(k) * dim, vocab,
             dim, out.data() + static_cast<size_t>(k) * vocab);
    }
  } else {
    for (int r = 0; r < vocab; ++r) {
      const float* row = base_classifier.data() + static_cast<size_t>(r) * dim;
      for (int k = 0; k < rows; ++k) {
        const float* h = states + static_cast<size_t>(k) * dim;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int c = 0; c < dim; ++c) acc += row[c] * h[c];
        out[static_cast<size_t>(k) * vocab + r] = acc;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace medusa
