// Sampling against a float64 reference: greedy, temperature, top-k, top-p, seeds.

#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "gtest/gtest.h"

namespace medusa {
namespace {

std::vector<double> ReferenceSoftmax(const std::vector<float>& logits, double temperature) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - max) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

TEST(SamplerTest, GreedyIsArgmaxWithFirstOnTies) {
  Sampler s({});
  EXPECT_EQ(s.Sample(std::vector<float>{1, 5, 3, 5}), 1);
  EXPECT_EQ(Argmax(std::vector<float>{-2, -1, -3}), 1);
}

TEST(SamplerTest, DistributionMatchesFloat64Softmax) {
  std::vector<float> logits = {2.0f, 1.0f, 0.5f, -1.0f, 3.0f};
  for (float t : {0.5f, 1.0f, 2.0f}) {
    Sampler s({.temperature = t});
    std::vector<float> probs;
    s.Distribution(logits, &probs);
    std::vector<double> ref = ReferenceSoftmax(logits, t);
    for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(probs[i], ref[i], 1e-6) << "t=" << t;
  }
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  std::vector<float> logits = {0.1f, 4.0f, 3.0f, 2.0f, 1.0f};
  Sampler s({.temperature = 1.0f, .top_k = 2});
  std::vector<float> probs;
  s.Distribution(logits, &probs);
  EXPECT_EQ(probs[0], 0.0f);
  EXPECT_EQ(probs[3], 0.0f);
  EXPECT_NEAR(probs[1] + probs[2], 1.0, 1e-6);
  EXPECT_NEAR(probs[1] / probs[2], std::exp(1.0), 1e-4);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.125 (log-space logits).
  std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
  Sampler s({.temperature = 1.0f, .top_p = 0.7f});
  std::vector<float> probs;
  s.Distribution(logits, &probs);
  EXPECT_NEAR(probs[0], 2.0 / 3, 1e-6);
  EXPECT_NEAR(probs[1], 1.0 / 3, 1e-6);
  EXPECT_EQ(probs[2], 0.0f);
  EXPECT_EQ(probs[3], 0.0f);
}

// The kept set of top-k then top-p, the direct way: sort everything by logit (ties to the
// lower id), take k, softmax in float64 over them, cut at the smallest prefix reaching p,
// renormalize.
std::vector<double> ReferenceFiltered(const std::vector<float>& logits, const SamplingParams& params) {
  std::vector<int> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  if (params.top_k > 0 && params.top_k < static_cast<int>(order.size())) order.resize(params.top_k);
  std::vector<double> w(order.size());
  double sum = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    sum += w[i] = std::exp((logits[order[i]] - logits[order[0]]) / params.temperature);
  }
  size_t cut = order.size();
  double mass = 0;
  for (size_t i = 0; params.top_p < 1.0f && i < order.size(); ++i) {
    mass += w[i] / sum;
    if (mass >= params.top_p) {
      cut = i + 1;
      break;
    }
  }
  double kept = 0;
  for (size_t i = 0; i < cut; ++i) kept += w[i];
  std::vector<double> probs(logits.size(), 0.0);
  for (size_t i = 0; i < cut; ++i) probs[order[i]] = w[i] / kept;
  return probs;
}

// The nucleus is found by growing a sorted prefix (not a full sort): the same kept set and
// probabilities as the direct way, on a real vocabulary size, with ties (coarse logits),
// small and large nuclei, and top-k before top-p.
TEST(SamplerTest, TopKTopPMatchTheDirectFilter) {
  std::mt19937 rng(3);
  int cases = 0;
  for (float scale : {0.5f, 3.0f, 8.0f}) {
    for (bool coarse : {false, true}) {
      std::normal_distribution<float> normal(0.0f, scale);
      std::vector<float> logits(49152);
      for (float& l : logits) l = coarse ? std::round(normal(rng) * 2) / 2 : normal(rng);
      for (const SamplingParams& params :
           {SamplingParams{.temperature = 0.7f, .top_p = 0.05f}, SamplingParams{.temperature = 1.0f, .top_p = 0.5f},
            SamplingParams{.temperature = 1.3f, .top_p = 0.95f}, SamplingParams{.temperature = 0.9f, .top_p = 0.999f},
            SamplingParams{.temperature = 0.8f, .top_k = 200, .top_p = 0.9f},
            SamplingParams{.temperature = 1.0f, .top_k = 5000, .top_p = 0.7f}}) {
        Sampler s(params);
        std::vector<float> probs;
        s.Distribution(logits, &probs);
        const std::vector<double> ref = ReferenceFiltered(logits, params);
        int kept = 0, ref_kept = 0;
        for (size_t i = 0; i < logits.size(); ++i) {
          kept += probs[i] > 0;
          ref_kept += ref[i] > 0;
          ASSERT_NEAR(probs[i], ref[i], 1e-6) << "token " << i << ", scale " << scale << ", top_p " << params.top_p;
        }
        EXPECT_EQ(kept, ref_kept);
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 36);
}

TEST(SamplerTest, SampleFrequenciesFollowTheDistribution) {
  std::vector<float> logits = {1.0f, 2.0f, 0.0f, 1.5f};
  std::vector<double> ref = ReferenceSoftmax(logits, 0.8);
  Sampler s({.temperature = 0.8f, .seed = 42});
  const int n = 40000;
  std::vector<int> counts(logits.size());
  for (int i = 0; i < n; ++i) counts[s.Sample(logits)]++;
  for (size_t i = 0; i < logits.size(); ++i) {
    double sigma = std::sqrt(ref[i] * (1 - ref[i]) / n);
    EXPECT_NEAR(counts[i] / double(n), ref[i], 5 * sigma) << "token " << i;
  }
}

TEST(SamplerTest, SameSeedSameChoicesOtherSeedOtherChoices) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-3, 3);
  std::vector<float> logits(1000);
  for (float& x : logits) x = u(rng);
  auto run = [&](uint64_t seed) {
    Sampler s({.temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.Sample(logits));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(SamplerTest, ValidateRejectsOutOfRangeValues) {
  EXPECT_EQ(SamplingParams{.temperature = -1}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingParams{.temperature = NAN}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingParams{.top_k = -1}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingParams{.top_p = 0}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SamplingParams{.top_p = 1.5f}.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(SamplingParams{.top_p = 1.5f}.Validate().message().find("top_p"), std::string::npos);
  EXPECT_TRUE((SamplingParams{.temperature = 0.7f, .top_k = 40, .top_p = 0.95f}.Validate().ok()));
}

}  // namespace
}  // namespace medusa
