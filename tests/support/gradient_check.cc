#include "tests/support/gradient_check.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace medusa::testing {

std::vector<float> RandomVector(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

DoubleHeads ToDouble(const MedusaHeadsWeights& f, const std::vector<float>& classifier) {
  DoubleHeads d{f.num_heads, f.num_layers, f.dim, f.vocab, {}, {}, {}};
  for (const MedusaHead& head : f.heads) {
    d.w.emplace_back();
    d.b.emplace_back();
    for (const MedusaResBlock& block : head.blocks) {
      d.w.back().emplace_back(block.weight.begin(), block.weight.end());
      d.b.back().emplace_back(block.bias.begin(), block.bias.end());
    }
    const std::vector<float>& p = f.has_projection() ? head.projection : classifier;
    d.p.emplace_back(p.begin(), p.end());
  }
  return d;
}

int DraftColumn(int32_t target, const std::vector<int32_t>& draft) {
  if (target < 0 || draft.empty()) return target;
  const auto it = std::find(draft.begin(), draft.end(), target);
  return it == draft.end() ? -1 : static_cast<int>(it - draft.begin());
}

double LogSumExp(const std::vector<double>& x) {
  const double max = *std::max_element(x.begin(), x.end());
  double z = 0.0;
  for (double v : x) z += std::exp(v - max);
  return std::log(z) + max;
}

std::vector<double> ReferenceLogits(const DoubleHeads& h, const DistillSet& data, int64_t row, int k,
                                    const std::vector<float>& embedding, const std::vector<int32_t>& draft) {
  const int dim = h.dim;
  std::vector<double> r(data.hidden.begin() + row * dim, data.hidden.begin() + (row + 1) * dim);
  std::vector<double> u = r;
  if (!embedding.empty()) {
    for (int32_t token : data.Path(static_cast<int>(row), k)) {
      for (int j = 0; j < dim; ++j) u.push_back(token < 0 ? 0.0 : embedding[token * dim + j]);
    }
  }
  for (int l = 0; l < h.layers; ++l) {
    const std::vector<double>& in = l == 0 ? u : r;
    std::vector<double> out = r;
    for (int i = 0; i < dim; ++i) {
      double z = h.b[k][l][i];
      for (size_t j = 0; j < in.size(); ++j) z += h.w[k][l][i * in.size() + j] * in[j];
      out[i] += z / (1.0 + std::exp(-z));
    }
    r = out;
  }
  const int width = draft.empty() ? h.vocab : static_cast<int>(draft.size());
  std::vector<double> logits(width);
  for (int i = 0; i < width; ++i) {
    const int v = draft.empty() ? i : draft[i];
    double s = 0.0;
    for (int j = 0; j < dim; ++j) s += h.p[k][v * dim + j] * r[j];
    logits[i] = s;
  }
  return logits;
}

void CheckTensor(const std::string& what, const std::vector<float>& analytic, std::vector<double>& param,
                 const std::function<double()>& loss) {
  ASSERT_EQ(analytic.size(), param.size()) << what;
  constexpr double kEps = 1e-5;
  double largest = 0.0;
  for (size_t i = 0; i < param.size(); ++i) {
    const double saved = param[i];
    param[i] = saved + kEps;
    const double up = loss();
    param[i] = saved - kEps;
    const double down = loss();
    param[i] = saved;
    const double numeric = (up - down) / (2 * kEps);
    largest = std::max(largest, std::fabs(numeric));
    EXPECT_NEAR(analytic[i], numeric, 2e-4 * std::fabs(numeric) + 2e-6) << what << " entry " << i;
  }
  EXPECT_GT(largest, 1e-3) << what << ": all gradients ~0, the check would prove nothing";
}

}  // namespace medusa::testing
