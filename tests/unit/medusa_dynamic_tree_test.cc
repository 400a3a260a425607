// Dynamic trees: proposals and their probabilities from head logits, and the choice of the
// `budget` most likely nodes of an envelope tree (always a valid tree, parents first).

#include "engine/medusa/dynamic_tree.h"

#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace medusa {
namespace {

using ::testing::ElementsAre;

TEST(DynamicTreeProposals, TopTokensWithTheirSoftmaxAtTheHeadsTemperature) {
  // Two heads of 4 draft tokens (ids 10, 20, 30, 40).
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f,  // head 0: a tie between entries 1 and 3
                                     0.0f, 0.0f, 0.0f, 5.0f};
  const std::vector<int32_t> draft = {10, 20, 30, 40};
  absl::StatusOr<HeadProposals> p = ProposalsFromLogits(logits, 4, draft, {3, 2}, {1.0, 2.0});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(p->ids[0], ElementsAre(20, 40, 30)) << "ties by index";
  EXPECT_THAT(p->ids[1], ElementsAre(40, 10));
  const double z0 = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(p->probability[0][0], std::exp(3.0) / z0, 1e-6);  // vectorized exponentials: 2e-7 relative
  EXPECT_NEAR(p->probability[0][2], std::exp(2.0) / z0, 1e-6);  // vectorized exponentials: 2e-7 relative
  const double z1 = 3.0 + std::exp(2.5);  // temperature 2
  EXPECT_NEAR(p->probability[1][0], std::exp(2.5) / z1, 1e-6);  // vectorized exponentials: 2e-7 relative
  EXPECT_NEAR(p->probability[1][1], 1.0 / z1, 1e-6);            // vectorized exponentials: 2e-7 relative

  // Without a draft vocabulary the ids are the entries; a missing temperature is 1.
  absl::StatusOr<HeadProposals> plain = ProposalsFromLogits(logits, 4, {}, {1, 1}, {});
  ASSERT_TRUE(plain.ok());
  EXPECT_THAT(plain->ids[0], ElementsAre(1));
  EXPECT_NEAR(plain->probability[1][0], std::exp(5.0) / (3.0 + std::exp(5.0)),
              1e-6);  // vectorized exponentials: 2e-7 relative
}

TEST(DynamicTreeProposals, BadSizesAreErrors) {
  const std::vector<float> logits(8, 0.0f);
  EXPECT_FALSE(ProposalsFromLogits(logits, 4, {}, {1, 1, 1}, {}).ok());  // 3 heads of 4 need 12
  EXPECT_FALSE(ProposalsFromLogits(logits, 4, {}, {5, 1}, {}).ok());     // more than the head has
  EXPECT_FALSE(ProposalsFromLogits(logits, 4, {}, {0, 1}, {}).ok());
  EXPECT_FALSE(ProposalsFromLogits(logits, 4, {1, 2, 3}, {1, 1}, {}).ok());  // draft of the wrong width
}

MedusaTree Envelope() {
  // Head 0: ranks 0-2; under [0]: head 1 ranks 0-1; under [0,0]: head 2 rank 0; under [1]: head 1 rank 0.
  absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths({{0}, {1}, {2}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 0}}, 3);
  EXPECT_TRUE(tree.ok());
  return *tree;
}

TEST(DynamicTreeChoice, KeepsTheMostLikelyPaths) {
  const MedusaTree envelope = Envelope();
  HeadProposals p;
  p.ids = {{1, 2, 3}, {4, 5}, {6}};
  p.probability = {{0.5, 0.4, 0.05}, {0.9, 0.05}, {0.8}};
  // Estimates: [0] .5, [1] .4, [2] .05, [0,0] .45, [0,1] .025, [1,0] .36, [0,0,0] .36
  EXPECT_THAT(ChooseDynamicPaths(envelope, p, 1), ElementsAre(ElementsAre(0)));
  EXPECT_THAT(ChooseDynamicPaths(envelope, p, 3), ElementsAre(ElementsAre(0), ElementsAre(0, 0), ElementsAre(1)));
  // [1,0] and [0,0,0] tie at 0.36: the shallower first.
  EXPECT_THAT(ChooseDynamicPaths(envelope, p, 4),
              ElementsAre(ElementsAre(0), ElementsAre(0, 0), ElementsAre(1), ElementsAre(1, 0)));
  EXPECT_EQ(ChooseDynamicPaths(envelope, p, 100).size(), 7u);
  EXPECT_TRUE(ChooseDynamicPaths(envelope, p, 0).empty());

  // Other probabilities, another tree from the same envelope.
  p.probability = {{0.1, 0.85, 0.05}, {0.9, 0.05}, {0.8}};
  EXPECT_THAT(ChooseDynamicPaths(envelope, p, 2), ElementsAre(ElementsAre(1), ElementsAre(1, 0)));
}

// Whatever the probabilities (ties and zeros included), every budget gives a valid tree: each
// kept node's parent is kept.
TEST(DynamicTreeChoice, AlwaysAValidTree) {
  absl::StatusOr<std::vector<std::vector<int>>> preset = TreePresetPaths("mc_sim_7b_63");
  ASSERT_TRUE(preset.ok());
  absl::StatusOr<MedusaTree> envelope = MedusaTree::FromPaths(*preset, 0);
  ASSERT_TRUE(envelope.ok());
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    HeadProposals p;
    for (int h = 0; h < envelope->num_heads_used(); ++h) {
      p.ids.emplace_back(envelope->topk(h), 0);
      std::vector<double>& probs = p.probability.emplace_back();
      for (int r = 0; r < envelope->topk(h); ++r) {
        const int kind = std::uniform_int_distribution<int>(0, 3)(rng);
        probs.push_back(kind == 0 ? 0.0 : kind == 1 ? 0.25 : std::uniform_real_distribution<double>(0, 1)(rng));
      }
    }
    const int budget = std::uniform_int_distribution<int>(0, envelope->num_nodes())(rng);
    const std::vector<std::vector<int>> paths = ChooseDynamicPaths(*envelope, p, budget);
    EXPECT_EQ(static_cast<int>(paths.size()), std::min(budget, envelope->num_nodes() - 1));
    absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(paths, envelope->num_heads_used());
    ASSERT_TRUE(tree.ok()) << "trial " << trial << ": " << tree.status();
  }
}

}  // namespace
}  // namespace medusa
