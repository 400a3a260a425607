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
