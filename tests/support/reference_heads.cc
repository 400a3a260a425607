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

absl::Status ComputeHydraHeadLogits(const MedusaHeadsWeights& weights, absl::Span<const float> base_classifier,
                                    absl::Span<const float> embedding, absl::Span<const float> hidden,
                                    absl::Span<const int32_t> path_tokens, int head, std::vector<double>* out) {
  RETURN_IF_ERROR(weights.Validate());
  const size_t dim = weights.dim, vocab = weights.vocab;
  if (weights.kind != HeadKind::kHydra || head < 0 || head >= weights.num_heads || hidden.size() != dim ||
      path_tokens.size() != static_cast<size_t>(head) + 1 || embedding.size() != vocab * dim ||
      (!weights.has_projection() && base_classifier.size() != vocab * dim)) {
    return absl::InvalidArgumentError("Hydra reference: sizes disagree");
  }
  std::vector<double> u(hidden.begin(), hidden.end());
  for (int32_t token : path_tokens) {
    if (token < 0 || static_cast<size_t>(token) >= vocab) return absl::InvalidArgumentError("token outside vocab");
    u.insert(u.end(), embedding.begin() + token * dim, embedding.begin() + (token + 1) * dim);
  }
  std::vector<double> r(hidden.begin(), hidden.end());
  const MedusaHead& h = weights.heads[head];
  for (size_t l = 0; l < h.blocks.size(); ++l) {
    const std::vector<double> in = l == 0 ? u : r;
    for (size_t o = 0; o < dim; ++o) {
      double z = h.blocks[l].bias[o];
      for (size_t i = 0; i < in.size(); ++i) z += static_cast<double>(h.blocks[l].weight[o * in.size() + i]) * in[i];
      r[o] += z / (1.0 + std::exp(-z));  // SiLU
    }
  }
  const float* projection = weights.has_projection() ? h.projection.data() : base_classifier.data();
  out->assign(vocab, 0.0);
  for (size_t t = 0; t < vocab; ++t) {
    double acc = 0.0;
    for (size_t i = 0; i < dim; ++i) acc += static_cast<double>(projection[t * dim + i]) * r[i];
    (*out)[t] = acc;
  }
  return absl::OkStatus();
}

}  // namespace medusa
