// The CPU backend's Medusa heads against the plain float32 reference (ComputeHeadLogits):
// shared and own projections, several rows, fewer heads than loaded, and a draft
// vocabulary (the logits of its tokens only, in its order).

#include "kernels/cpu/medusa_heads.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "kernels/model/weight_format.h"
#include "tests/support/random_heads.h"
#include "tests/support/reference_heads.h"

namespace medusa::kernels::cpu {
namespace {

using math::ThreadPool;

constexpr int kDim = 40;    // not a multiple of any vector width: tails on every path
constexpr int kVocab = 97;

ModelConfig Config() {
  ModelConfig config;
  config.dim = kDim;
  config.vocab_size = kVocab;
  return config;
}

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Reference logits [rows, heads, vocab].
std::vector<float> Reference(const MedusaHeadsWeights& heads, const std::vector<float>& classifier,
                             const std::vector<float>& hidden, int rows, int num_heads) {
  std::vector<float> out(static_cast<size_t>(rows) * num_heads * kVocab);
  for (int r = 0; r < rows; ++r) {
    const absl::Span<const float> h = absl::MakeConstSpan(hidden).subspan(r * kDim, kDim);
    EXPECT_TRUE(ComputeHeadLogits(heads, classifier, h,
                                  absl::MakeSpan(out).subspan(static_cast<size_t>(r) * num_heads * kVocab,
                                                              static_cast<size_t>(num_heads) * kVocab))
                    .ok());
  }
  return out;
}

class CpuMedusaHeadsTest : public ::testing::TestWithParam<bool> {};  // own projection?

TEST_P(CpuMedusaHeadsTest, MatchReferenceWithAndWithoutDraftVocabulary) {
  const bool own = GetParam();
  const std::vector<float> classifier = Random(static_cast<size_t>(kVocab) * kDim, 1);
  const PackedMatrix packed(classifier.data(), kVocab, kDim);
  MedusaHeadsWeights heads = RandomMedusaHeads(Config(), 3, 2, own, 2, 0.2f);
  const int rows = 5;
  const std::vector<float> hidden = Random(static_cast<size_t>(rows) * kDim, 3);
  ThreadPool pool(2);
  for (int num_heads : {3, 2}) {
    SCOPED_TRACE(num_heads);
    const std::vector<float> want = Reference(heads, classifier, hidden, rows, num_heads);
    for (const std::vector<int32_t>& draft : {std::vector<int32_t>{}, std::vector<int32_t>{50, 3, 96, 0, 41, 7}}) {
      SCOPED_TRACE(draft.size());
      heads.draft_vocab = draft;
      MedusaHeadsCpu cpu;
      ASSERT_TRUE(cpu.Load(heads, kDim, kVocab, &packed).ok());
      EXPECT_EQ(std::vector<int32_t>(cpu.draft_vocab().begin(), cpu.draft_vocab().end()), draft);
      std::vector<float> got;
      ASSERT_TRUE(cpu.Compute(hidden, rows, num_heads, &pool, &got).ok());
      const int width = draft.empty() ? kVocab : static_cast<int>(draft.size());
      ASSERT_EQ(got.size(), static_cast<size_t>(rows) * num_heads * width);
      for (int r = 0; r < rows; ++r) {
        for (int h = 0; h < num_heads; ++h) {
          for (int i = 0; i < width; ++i) {
            const int token = draft.empty() ? i : draft[i];
            const float w = want[(static_cast<size_t>(r) * num_heads + h) * kVocab + token];
            const float g = got[(static_cast<size_t>(r) * num_heads + h) * width + i];
            ASSERT_NEAR(g, w, 1e-4f * (1.0f + std::fabs(w))) << "row " << r << " head " << h << " token " << token;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Projections, CpuMedusaHeadsTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Own" : "Shared"; });

TEST(CpuMedusaHeadsBlockType, FollowsTheClassifiersFamily) {
  EXPECT_EQ(MedusaHeadsCpu::BlockTypeFor(WeightType::kF32, 64), WeightType::kF32);
  EXPECT_EQ(MedusaHeadsCpu::BlockTypeFor(WeightType::kBF16, 64), WeightType::kBF16);
  EXPECT_EQ(MedusaHeadsCpu::BlockTypeFor(WeightType::kF16, 64), WeightType::kF16);
  for (WeightType quantized : {WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kQ4_1}) {
    EXPECT_EQ(MedusaHeadsCpu::BlockTypeFor(quantized, 64), WeightType::kQ8_0);
    EXPECT_EQ(MedusaHeadsCpu::BlockTypeFor(quantized, kDim), WeightType::kF32);  // 40: not whole blocks
  }
}

// Heads of a quantized model: Q8_0 blocks beside a Q8_0 classifier, int8 activations. Against
// the float32 reference on the same rounded weights, every logit is within the error that
// quantizing the activations to 8 bits per 32-value block allows.
TEST(CpuMedusaHeadsBlockType, Q8BlocksMatchTheReferenceOnTheirRoundedWeights) {
  constexpr int kDim64 = 64;
  ModelConfig config = Config();
  config.dim = kDim64;
  const std::vector<uint8_t> classifier_q8 =
      QuantizeMatrix(WeightType::kQ8_0, Random(size_t{kVocab} * kDim64, 1).data(), kVocab, kDim64);
  const std::vector<float> classifier = DequantizeMatrix(WeightType::kQ8_0, classifier_q8.data(), kVocab, kDim64);
  const PackedMatrix packed(WeightType::kQ8_0, classifier_q8.data(), kVocab, kDim64);
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 3, 2, /*own_projection=*/false, 2, 0.2f);
  MedusaHeadsWeights rounded = heads;  // the block weights as Q8_0 stores them
  for (MedusaHead& head : rounded.heads) {
    for (MedusaResBlock& block : head.blocks) {
      const std::vector<uint8_t> q8 = QuantizeMatrix(WeightType::kQ8_0, block.weight.data(), kDim64, kDim64);
      block.weight = DequantizeMatrix(WeightType::kQ8_0, q8.data(), kDim64, kDim64);
    }
  }
  const int rows = 3, num_heads = 3;
  const std::vector<float> hidden = Random(static_cast<size_t>(rows) * kDim64, 3);
  std::vector<float> want(static_cast<size_t>(rows) * num_heads * kVocab);
  for (int r = 0; r < rows; ++r) {
    ASSERT_TRUE(ComputeHeadLogits(rounded, classifier, absl::MakeConstSpan(hidden).subspan(r * kDim64, kDim64),
                                  absl::MakeSpan(want).subspan(static_cast<size_t>(r) * num_heads * kVocab,
                                                               static_cast<size_t>(num_heads) * kVocab))
                    .ok());
  }
  MedusaHeadsCpu cpu;
  ASSERT_TRUE(cpu.Load(heads, kDim64, kVocab, &packed, MedusaHeadsCpu::BlockTypeFor(packed.type(), kDim64)).ok());
  ThreadPool pool(2);
  std::vector<float> got;
  ASSERT_TRUE(cpu.Compute(hidden, rows, num_heads, &pool, &got).ok());
  ASSERT_EQ(got.size(), want.size());
  float scale = 0.0f;
  for (float w : want) scale = std::max(scale, std::fabs(w));
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
  EXPECT_LT(worst, 0.03 * scale);  // int8 activations: about 1/254 of each block's range per value
  EXPECT_GT(worst, 0.0);           // int8 activations were used, not float32 products
}

TEST(CpuMedusaHeadsErrors, BadDraftTokensAndHeadCounts) {
  const std::vector<float> classifier = Random(static_cast<size_t>(kVocab) * kDim, 1);
  const PackedMatrix packed(classifier.data(), kVocab, kDim);
  MedusaHeadsWeights heads = RandomMedusaHeads(Config(), 2, 1, false, 2, 0.2f);
  heads.draft_vocab = {4, kVocab};
  MedusaHeadsCpu cpu;
  EXPECT_EQ(cpu.Load(heads, kDim, kVocab, &packed).code(), absl::StatusCode::kInvalidArgument);
  heads.draft_vocab = {4, 5};
  ASSERT_TRUE(cpu.Load(heads, kDim, kVocab, &packed).ok());
  std::vector<float> out;
  ThreadPool pool(1);
  EXPECT_EQ(cpu.Compute(std::vector<float>(kDim), 1, 3, &pool, &out).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cpu.Compute(std::vector<float>(kDim - 1), 1, 1, &pool, &out).code(),
            absl::StatusCode::kInvalidArgument);
}

// Hydra heads (sequentially dependent) per tree path against the float64 reference: each
// path's logits from h and its tokens' embeddings, shared and own projections, an untied
// embedding table, a draft vocabulary, and a batch of paths equal to the paths one by one.
TEST_P(CpuMedusaHeadsTest, HydraPathsMatchTheFloat64Reference) {
  const bool own = GetParam();
  const std::vector<float> classifier = Random(static_cast<size_t>(kVocab) * kDim, 1);
  const std::vector<float> embedding = Random(static_cast<size_t>(kVocab) * kDim, 7);
  const PackedMatrix packed(classifier.data(), kVocab, kDim);
  const PackedMatrix packed_embedding(embedding.data(), kVocab, kDim);
  MedusaHeadsWeights heads = RandomMedusaHeads(Config(), 3, 2, own, 2, 0.1f, HeadKind::kHydra);
  const std::vector<int32_t> draft = {50, 3, 96, 0, 41, 7, 12};
  heads.draft_vocab = draft;
  MedusaHeadsCpu cpu;
  ASSERT_TRUE(cpu.Load(heads, kDim, kVocab, &packed, WeightType::kF32, &packed_embedding).ok());
  EXPECT_EQ(cpu.kind(), HeadKind::kHydra);
  ThreadPool pool(2);
  const int rows = 4;
  const std::vector<float> hidden = Random(static_cast<size_t>(rows) * kDim, 3);
  std::mt19937 rng(5);
  for (int head = 0; head < 3; ++head) {
    SCOPED_TRACE(head);
    std::vector<int32_t> paths(static_cast<size_t>(rows) * (head + 1));
    for (int32_t& t : paths) t = static_cast<int32_t>(rng() % kVocab);
    std::vector<float> got;
    ASSERT_TRUE(cpu.ComputeHydra(hidden, paths, rows, head, &pool, &got).ok());
    ASSERT_EQ(got.size(), static_cast<size_t>(rows) * draft.size());
    for (int r = 0; r < rows; ++r) {
      const absl::Span<const int32_t> path = absl::MakeConstSpan(paths).subspan(r * (head + 1), head + 1);
      std::vector<double> want;
      ASSERT_TRUE(ComputeHydraHeadLogits(heads, classifier, embedding,
                                         absl::MakeConstSpan(hidden).subspan(r * kDim, kDim), path, head, &want)
                      .ok());
      std::vector<float> alone;  // the same path by itself
      ASSERT_TRUE(
          cpu.ComputeHydra(absl::MakeConstSpan(hidden).subspan(r * kDim, kDim), path, 1, head, &pool, &alone).ok());
      for (size_t i = 0; i < draft.size(); ++i) {
        const double w = want[draft[i]];
        const float g = got[r * draft.size() + i];
        ASSERT_NEAR(g, w, 1e-4 * (1.0 + std::fabs(w))) << "row " << r << " token " << draft[i];
        EXPECT_EQ(alone[i], g) << "a path's logits depend on the paths beside it";
      }
    }
  }
}

TEST(CpuMedusaHeadsErrors, HydraAndMedusaCallsAreNotMixed) {
  const std::vector<float> classifier = Random(static_cast<size_t>(kVocab) * kDim, 1);
  const PackedMatrix packed(classifier.data(), kVocab, kDim);
  ThreadPool pool(1);
  std::vector<float> out;
  MedusaHeadsCpu cpu;
  const MedusaHeadsWeights hydra = RandomMedusaHeads(Config(), 2, 1, false, 2, 0.2f, HeadKind::kHydra);
  EXPECT_EQ(cpu.Load(hydra, kDim, kVocab, &packed).code(), absl::StatusCode::kFailedPrecondition);  // no embeddings
  ASSERT_TRUE(cpu.Load(hydra, kDim, kVocab, &packed, WeightType::kF32, &packed).ok());
  EXPECT_EQ(cpu.Compute(std::vector<float>(kDim), 1, 1, &pool, &out).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cpu.ComputeHydra(std::vector<float>(kDim), std::vector<int32_t>{1, 2, 3}, 1, 2, &pool, &out).code(),
            absl::StatusCode::kInvalidArgument);  // head 2 of 2
  EXPECT_EQ(cpu.ComputeHydra(std::vector<float>(kDim), std::vector<int32_t>{1, kVocab}, 1, 1, &pool, &out).code(),
            absl::StatusCode::kInvalidArgument);  // a token outside the vocabulary
  EXPECT_EQ(cpu.ComputeHydra(std::vector<float>(kDim), std::vector<int32_t>{1}, 1, 1, &pool, &out).code(),
            absl::StatusCode::kInvalidArgument);  // head 1 needs two tokens
  ASSERT_TRUE(cpu.ComputeHydra(std::vector<float>(kDim), std::vector<int32_t>{1, 2}, 1, 1, &pool, &out).ok());
  ASSERT_TRUE(cpu.Load(RandomMedusaHeads(Config(), 2, 1, false, 2, 0.2f), kDim, kVocab, &packed).ok());
  EXPECT_EQ(cpu.ComputeHydra(std::vector<float>(kDim), std::vector<int32_t>{1}, 1, 0, &pool, &out).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace medusa::kernels::cpu
