// kernels/softmax_stats against the definition in float64: the largest logit, log Z and the
// entropy of the tempered softmax, on random rows, rows with -inf and NaN entries, and rows
// without a number.

#include "kernels/softmax_stats.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace medusa::kernels {
namespace {

struct Definition {
  double max_logit, log_z, entropy;
};

Definition Define(const std::vector<float>& row, double temperature) {
  double m = -std::numeric_limits<double>::infinity();
  for (float v : row) {
    if (!std::isnan(v) && v > m) m = v;
  }
  double z = 0;
  for (float v : row) {
    if (!std::isnan(v)) z += std::exp((v - m) / temperature);
  }
  double h = 0;
  for (float v : row) {
    if (std::isnan(v)) continue;
    const double p = std::exp((v - m) / temperature) / z;
    if (p > 0) h -= p * std::log(p);
  }
  return {m, std::log(z), h};
}

TEST(SoftmaxStatsTest, MatchesTheDefinitionInFloat64) {
  std::mt19937 rng(7);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 3000);
    const float scale = std::vector<float>{0.1f, 1.0f, 5.0f, 30.0f}[trial % 4];
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> row(n);
    for (float& v : row) v = normal(rng);
    if (trial % 5 == 1) row[rng() % n] = -inf;
    if (trial % 5 == 2 && n > 1) row[rng() % n] = nan;
    const double temperature = std::vector<double>{0.2, 0.7, 1.0, 2.0}[rng() % 4];
    const SoftmaxStats got = TemperedSoftmaxStats(row, temperature);
    const Definition want = Define(row, temperature);
    ASSERT_EQ(got.max_logit, static_cast<float>(want.max_logit)) << "trial " << trial;
    ASSERT_NEAR(got.log_z, want.log_z, 1e-6 * std::max(1.0, want.log_z)) << "trial " << trial;
    ASSERT_NEAR(got.entropy, want.entropy, 1e-6 * std::max(1.0, want.entropy)) << "trial " << trial;
  }
}

TEST(SoftmaxStatsTest, RowsWithoutANumber) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (const std::vector<float>& row : {std::vector<float>{-inf, -inf}, std::vector<float>{nan, nan}}) {
    const SoftmaxStats s = TemperedSoftmaxStats(row, 1.0);
    EXPECT_EQ(s.max_logit, -inf);
    EXPECT_EQ(s.log_z, std::numeric_limits<double>::infinity());
    EXPECT_EQ(s.entropy, 0.0);
  }
  EXPECT_EQ(MaxLogit(std::vector<float>{nan, 2.0f, -1.0f, nan}), 2.0f);
}

}  // namespace
}  // namespace medusa::kernels
