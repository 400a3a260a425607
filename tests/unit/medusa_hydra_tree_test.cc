// Hydra trees grown depth by depth: which nodes each depth expands, what the step keeps (the
// budget's most likely paths, always a tree), and the tokens of every kept node.

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "engine/medusa/hydra_tree.h"
#include "engine/medusa/tree.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace medusa {
namespace {

using ::testing::ElementsAre;

TEST(HydraTree, GrowsTheMostLikelyNodesAndKeepsTheBudgetsBest) {
  HydraTreeBuilder tree({.budget = 3, .max_depth = 3, .expand_width = 2, .topk = 2}, /*root=*/100);
  ASSERT_THAT(tree.Frontier(), ElementsAre(0));
  EXPECT_THAT(tree.PathTokens(0), ElementsAre(100));
  // Depth 1: two children of the root (a third proposal is beyond topk).
  ASSERT_TRUE(tree.AddChildren(0, {11, 12, 13}, {0.6, 0.3, 0.1}).ok());
  tree.Advance();
  ASSERT_THAT(tree.Frontier(), ElementsAre(1, 2));  // 11 (.6), 12 (.3)
  EXPECT_THAT(tree.PathTokens(2), ElementsAre(100, 12));
  ASSERT_TRUE(tree.AddChildren(1, {21, 22}, {0.9, 0.05}).ok());  // .54, .03
  ASSERT_TRUE(tree.AddChildren(2, {23, 24}, {0.5, 0.5}).ok());   // .15, .15
  tree.Advance();
  // Kept so far (3 best): 11 .6, 21 .54, 12 .3; of the new nodes only 21 can still be kept.
  ASSERT_THAT(tree.Frontier(), ElementsAre(3));
  EXPECT_THAT(tree.PathTokens(3), ElementsAre(100, 11, 21));
  ASSERT_TRUE(tree.AddChildren(3, {31}, {0.7}).ok());  // .378: beats 12's .3
  tree.Advance();
  EXPECT_TRUE(tree.Frontier().empty());  // no head left
  EXPECT_THAT(tree.Paths(), ElementsAre(ElementsAre(0), ElementsAre(0, 0), ElementsAre(0, 0, 0)));
  EXPECT_THAT(tree.Tokens(), ElementsAre(11, 21, 31));
  EXPECT_EQ(tree.num_grown(), 7);
  EXPECT_FALSE(tree.AddChildren(1, {1}, {1.0}).ok()) << "not on the frontier";
}

TEST(HydraTree, NothingToGrowWithoutBudgetOrHeads) {
  EXPECT_TRUE(HydraTreeBuilder({.budget = 0, .max_depth = 4}, 1).Frontier().empty());
  EXPECT_TRUE(HydraTreeBuilder({.budget = 4, .max_depth = 0}, 1).Frontier().empty());
  HydraTreeBuilder tree({.budget = 4, .max_depth = 4}, 1);
  EXPECT_FALSE(tree.AddChildren(0, {1, 2}, {0.5}).ok()) << "ids and probabilities differ in count";
  EXPECT_TRUE(tree.Paths().empty());
}

// Whatever the proposals (ties and zeros included), the kept nodes form a valid tree of
// min(budget, grown) nodes no deeper than max_depth, with the tokens of their own paths.
TEST(HydraTree, AlwaysAValidTree) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    HydraTreeOptions options{.budget = static_cast<int>(rng() % 20),
                             .max_depth = 1 + static_cast<int>(rng() % 5),
                             .expand_width = 1 + static_cast<int>(rng() % 5),
                             .topk = 1 + static_cast<int>(rng() % 5)};
    HydraTreeBuilder tree(options, 7);
    while (!tree.Frontier().empty()) {
      for (int node : tree.Frontier()) {
        std::vector<int32_t> ids;
        std::vector<double> p;
        for (int k = 0; k < 6; ++k) {
          // A node's token encodes its parent's path, so the test can check every kept token.
          ids.push_back(static_cast<int32_t>(node * 10 + k));
          const int kind = static_cast<int>(rng() % 3);
          p.push_back(kind == 0 ? 0.0 : kind == 1 ? 0.25 : std::uniform_real_distribution<double>(0, 1)(rng));
        }
        ASSERT_TRUE(tree.AddChildren(node, ids, p).ok());
      }
      tree.Advance();
    }
    const std::vector<std::vector<int>> paths = tree.Paths();
    EXPECT_EQ(static_cast<int>(paths.size()), std::min(options.budget, tree.num_grown()));
    absl::StatusOr<MedusaTree> built = MedusaTree::FromPaths(paths, options.max_depth);
    ASSERT_TRUE(built.ok()) << "trial " << trial << ": " << built.status();
    const std::vector<int32_t> tokens = tree.Tokens();
    for (size_t i = 0; i < paths.size(); ++i) {
      EXPECT_EQ(tokens[i] % 10, paths[i].back()) << "a kept node's token is its own proposal";
    }
  }
}

// With room to expand every node that might be kept, the builder keeps exactly the budget's
// most likely nodes of the whole tree the heads would grow (brute force below), while growing no
// node deeper than the budget and no child ranked past it: what it skips could never be kept.
TEST(HydraTree, SkipsOnlyWhatCouldNeverBeKept) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const HydraTreeOptions options{.budget = 1 + static_cast<int>(rng() % 6),
                                   .max_depth = 1 + static_cast<int>(rng() % 4),
                                   .expand_width = 1000,
                                   .topk = 1 + static_cast<int>(rng() % 4)};
    // The heads' proposals for a node: topk + 2 tokens with distinct random probabilities,
    // a function of the node's path (so the brute force sees the same ones).
    auto proposals = [&](const std::vector<int32_t>& path) {
      std::seed_seq seed(path.begin(), path.end());
      std::mt19937 node_rng(seed);
      std::vector<double> p(options.topk + 2);
      for (double& x : p) x = std::uniform_real_distribution<double>(0.01, 1)(node_rng);
      std::sort(p.rbegin(), p.rend());
      std::vector<int32_t> ids(p.size());
      for (size_t k = 0; k < ids.size(); ++k) ids[k] = static_cast<int32_t>(path.back() * 10 + k + 1);
      return std::make_pair(ids, p);
    };
    // Brute force: every node up to max_depth with topk children each, then the budget best.
    std::vector<std::pair<double, std::vector<int32_t>>> all;
    std::vector<std::pair<double, std::vector<int32_t>>> level = {{1.0, {0}}};
    for (int depth = 1; depth <= options.max_depth; ++depth) {
      std::vector<std::pair<double, std::vector<int32_t>>> next;
      for (const auto& [estimate, path] : level) {
        const auto [ids, p] = proposals(path);
        for (int k = 0; k < options.topk; ++k) {
          std::vector<int32_t> child = path;
          child.push_back(ids[k]);
          next.push_back({estimate * p[k], child});
        }
      }
      all.insert(all.end(), next.begin(), next.end());
      level = std::move(next);
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    std::vector<int32_t> want;
    for (int i = 0; i < std::min<int>(options.budget, all.size()); ++i) want.push_back(all[i].second.back());
    std::sort(want.begin(), want.end());

    HydraTreeBuilder tree(options, 0);
    int head_rows = 0;
    while (!tree.Frontier().empty()) {
      for (int node : tree.Frontier()) {
        const std::vector<int32_t> path = tree.PathTokens(node);
        ASSERT_LT(static_cast<int>(path.size()) - 1, options.budget) << "a node at the budget's depth expanded";
        const auto [ids, p] = proposals(path);
        ASSERT_TRUE(tree.AddChildren(node, ids, p).ok());
        ++head_rows;
      }
      tree.Advance();
    }
    std::vector<int32_t> got = tree.Tokens();
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << "trial " << trial << ", budget " << options.budget;
    if (options.budget == 1) {
      EXPECT_EQ(head_rows, 1) << "one node: only the root's children can be kept";
    }
  }
}

}  // namespace
}  // namespace medusa
