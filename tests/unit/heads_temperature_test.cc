// Temperature scaling of Medusa heads' probabilities (FitHeadTemperatures): on rows whose
// targets are drawn from softmax(logits / T0), the fit recovers T0, and the calibration error
// and the held-out log-likelihood improve on the unscaled heads.

#include <cmath>
#include <random>

#include "engine/train/distill_set.h"
#include "engine/train/heads_evaluation.h"
#include "gtest/gtest.h"
#include "tests/support/random_heads.h"

namespace medusa {
namespace {

constexpr int kDim = 16;
constexpr int kVocab = 40;

// Heads whose blocks are the identity (zero weights: h + SiLU(0) = h), so head k's logits are
// its projection times the hidden state.
MedusaHeadsWeights IdentityBlockHeads(int num_heads) {
  ModelConfig config;
  config.dim = kDim;
  config.vocab_size = kVocab;
  MedusaHeadsWeights heads = RandomMedusaHeads(config, num_heads, 1, /*with_projection=*/true, 5, 0.6f);
  for (MedusaHead& head : heads.heads) {
    for (MedusaResBlock& block : head.blocks) {
      std::fill(block.weight.begin(), block.weight.end(), 0.0f);
      std::fill(block.bias.begin(), block.bias.end(), 0.0f);
    }
  }
  return heads;
}

// `rows` hidden states with head k's target drawn from softmax(logits_k / true_temperature[k]).
DistillSet SampledRows(const MedusaHeadsWeights& heads, const std::vector<double>& true_temperature, int rows) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  DistillSet data;
  data.dim = kDim;
  data.num_heads = heads.num_heads;
  for (int r = 0; r < rows; ++r) {
    std::vector<float> h(kDim);
    for (float& v : h) v = normal(rng);
    std::vector<int32_t> targets;
    for (int k = 0; k < heads.num_heads; ++k) {
      std::vector<double> p(kVocab);
      for (int t = 0; t < kVocab; ++t) {
        double z = 0.0;
        for (int i = 0; i < kDim; ++i) z += heads.heads[k].projection[static_cast<size_t>(t) * kDim + i] * h[i];
        p[t] = std::exp(z / true_temperature[k]);
      }
      targets.push_back(std::discrete_distribution<int32_t>(p.begin(), p.end())(rng));
    }
    EXPECT_TRUE(data.Append(h, targets).ok());
  }
  return data;
}

TEST(HeadTemperatures, RecoverTheTemperatureTheTargetsWereDrawnAt) {
  const MedusaHeadsWeights heads = IdentityBlockHeads(3);
  const std::vector<double> truth = {2.5, 1.0, 0.6};  // over-, well- and under-confident heads
  const DistillSet data = SampledRows(heads, truth, 6000);
  absl::StatusOr<std::vector<HeadTemperatureFit>> fits = FitHeadTemperatures(heads, {}, data, 6000, 2);
  ASSERT_TRUE(fits.ok()) << fits.status();
  ASSERT_EQ(fits->size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const HeadTemperatureFit& f = (*fits)[k];
    SCOPED_TRACE(k);
    EXPECT_EQ(f.fit_rows, 3000);
    EXPECT_EQ(f.eval_rows, 3000);
    EXPECT_NEAR(f.temperature, truth[k], 0.1 * truth[k]);
    EXPECT_LE(f.nll_after, f.nll_before + 1e-3);
    EXPECT_LT(f.ece_after, 0.03);  // calibrated: within sampling noise
  }
  // The miscalibrated heads improve clearly.
  EXPECT_GT((*fits)[0].ece_before, 2 * (*fits)[0].ece_after);
  EXPECT_GT((*fits)[0].nll_before, (*fits)[0].nll_after + 0.05);
  EXPECT_GT((*fits)[2].ece_before, 2 * (*fits)[2].ece_after);
}

TEST(HeadTemperatures, ADraftVocabularyIsWhatTheHeadsProposeFrom) {
  MedusaHeadsWeights heads = IdentityBlockHeads(1);
  const DistillSet data = SampledRows(heads, {1.5}, 2000);
  // Ten of the forty tokens: a target outside them is never a hit.
  heads.draft_vocab = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  absl::StatusOr<std::vector<HeadTemperatureFit>> fits = FitHeadTemperatures(heads, {}, data, 2000, 1);
  ASSERT_TRUE(fits.ok()) << fits.status();
  const HeadTemperatureFit& f = (*fits)[0];
  EXPECT_EQ(f.fit_rows + f.eval_rows, 2000);
  EXPECT_GT(f.temperature, 0.05);
  EXPECT_LT(f.temperature, 20.0);
  // Probabilities over 10 of 40 tokens claim more than the head can deliver: a quarter of the
  // targets are out of reach, so the top proposal is overconfident and a fit cannot fix it all.
  EXPECT_GT(f.ece_after, 0.0);
  EXPECT_TRUE(std::isfinite(f.nll_after));
}

TEST(HeadTemperatures, BadArgumentsAreClearErrors) {
  const MedusaHeadsWeights heads = IdentityBlockHeads(2);
  const DistillSet data = SampledRows(heads, {1.0, 1.0}, 10);
  EXPECT_EQ(FitHeadTemperatures(heads, {}, data, 1).status().code(), absl::StatusCode::kInvalidArgument);
  DistillSet one_head = data;
  one_head.num_heads = 1;
  one_head.targets.resize(10);
  EXPECT_EQ(FitHeadTemperatures(heads, {}, one_head).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace medusa
