// Medusa candidates: the partial-selection top-k against a full sort, and the tree's
// tokens per node and per retrieval path, by hand and on the presets.

#include "engine/medusa/candidates.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace medusa {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// The reference: a full stable sort by value, descending (NaN last).
std::vector<int32_t> SortedTopK(const std::vector<float>& row, size_t k) {
  std::vector<int32_t> ids(row.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    const bool an = std::isnan(row[a]), bn = std::isnan(row[b]);
    if (an || bn) return !an && bn;
    return row[a] > row[b];
  });
  ids.resize(k);
  return ids;
}

std::vector<int32_t> Select(TopK& topk, const std::vector<float>& row, size_t k) {
  std::vector<int32_t> out(k, -7);
  topk.Select(row, absl::MakeSpan(out));
  return out;
}

TEST(TopKTest, ByHand) {
  TopK topk;
  const std::vector<float> row = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f};
  EXPECT_THAT(Select(topk, row, 1), ElementsAre(5));
  EXPECT_THAT(Select(topk, row, 3), ElementsAre(5, 1, 3));  // the tie: smaller index first
  EXPECT_THAT(Select(topk, row, 6), ElementsAre(5, 1, 3, 4, 0, 2));
  EXPECT_TRUE(Select(topk, row, 0).empty());
}

TEST(TopKTest, NanRanksLastAndInfinitiesAreOrdered) {
  TopK topk;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> row = {nan, -inf, 1.0f, nan, inf, 0.0f};
  EXPECT_THAT(Select(topk, row, 4), ElementsAre(4, 2, 5, 1));
  EXPECT_THAT(Select(topk, row, 6), ElementsAre(4, 2, 5, 1, 0, 3));
}

TEST(TopKTest, MatchesFullSortOnRandomRows) {
  TopK topk;
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t n = 1 + rng() % 3000;
    std::vector<float> row(n);
    // Few distinct values make ties common; sometimes an ascending row (worst case).
    const int mode = trial % 3;
    for (size_t i = 0; i < n; ++i) {
      row[i] = mode == 0   ? std::normal_distribution<float>(0, 3)(rng)
               : mode == 1 ? static_cast<float>(rng() % 7)
                           : static_cast<float>(i) * 0.5f;
    }
    if (trial % 10 == 0) row[rng() % n] = std::numeric_limits<float>::quiet_NaN();
    for (size_t k : {size_t{1}, size_t{2}, size_t{10}, size_t{64}, size_t{65}, size_t{200}}) {
      if (k > n) continue;
      ASSERT_EQ(Select(topk, row, k), SortedTopK(row, k)) << "trial " << trial << " k " << k;
    }
  }
}

// ------------------------------------------------------------------ CandidateBuilder

// Head logits where head h ranks tokens by a known order: logits[h][v] = -position of v
// in `orders[h]` (unlisted tokens far below).
std::vector<float> HeadLogits(const std::vector<std::vector<int32_t>>& orders, int vocab) {
  std::vector<float> out(orders.size() * vocab, -1000.0f);
  for (size_t h = 0; h < orders.size(); ++h) {
    for (size_t r = 0; r < orders[h].size(); ++r) out[h * vocab + orders[h][r]] = -float(r);
  }
  return out;
}

TEST(CandidateBuilderTest, SmallTreeByHand) {
  // Nodes: 0 root, 1 [0], 2 [1], 3 [0,0], 4 [0,1], 5 [1,0], 6 [0,0,0].
  absl::StatusOr<MedusaTree> tree =
      MedusaTree::FromPaths({{0}, {1}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 0}}, 3);
  ASSERT_TRUE(tree.ok());
  absl::StatusOr<CandidateBuilder> builder = CandidateBuilder::Create(*tree, 20);
  ASSERT_TRUE(builder.ok());
  // Head 0 ranks 7, 3, 9, ...; head 1 ranks 12, 4, ...; head 2 ranks 15, ...
  const std::vector<float> logits = HeadLogits({{7, 3, 9}, {12, 4, 1}, {15, 2}}, 20);
  ASSERT_TRUE(builder->Build(/*root_token=*/5, logits).ok());
  EXPECT_THAT(builder->head_topk(0), ElementsAre(7, 3));
  EXPECT_THAT(builder->head_topk(1), ElementsAre(12, 4));
  EXPECT_THAT(builder->head_topk(2), ElementsAre(15));
  EXPECT_THAT(builder->node_tokens(), ElementsAre(5, 7, 3, 12, 4, 12, 15));
  // Leaves 4, 5, 6: root..leaf tokens.
  EXPECT_THAT(builder->path_tokens(0), ElementsAre(5, 7, 4));
  EXPECT_THAT(builder->path_tokens(1), ElementsAre(5, 3, 12));
  EXPECT_THAT(builder->path_tokens(2), ElementsAre(5, 7, 12, 15));
}

TEST(CandidateBuilderTest, ExternalTopKAndReuse) {
  MedusaTree chain = MedusaTree::Chain(2);
  absl::StatusOr<CandidateBuilder> builder = CandidateBuilder::Create(chain, 10);
  ASSERT_TRUE(builder.ok());
  builder->mutable_head_topk(0)[0] = 8;
  builder->mutable_head_topk(1)[0] = 2;
  builder->AssignTokens(1);
  EXPECT_THAT(builder->node_tokens(), ElementsAre(1, 8, 2));
  // A second step overwrites everything.
  ASSERT_TRUE(builder->Build(4, HeadLogits({{6}, {0}}, 10)).ok());
  EXPECT_THAT(builder->node_tokens(), ElementsAre(4, 6, 0));
  EXPECT_THAT(builder->path_tokens(0), ElementsAre(4, 6, 0));
}

TEST(CandidateBuilderTest, DraftVocabularyMapsRanksToTokens) {
  MedusaTree chain = MedusaTree::Chain(2);
  absl::StatusOr<CandidateBuilder> builder = CandidateBuilder::Create(chain, 100);
  ASSERT_TRUE(builder.ok());
  // Rows over a 4-token draft vocabulary: entry i is token draft[i].
  const std::vector<int32_t> draft = {42, 7, 99, 0};
  ASSERT_TRUE(builder->Build(5, HeadLogits({{2}, {3}}, 4), draft).ok());
  EXPECT_THAT(builder->node_tokens(), ElementsAre(5, 99, 0));
  // Rows must be as wide as the draft, and the tree cannot ask for more than it has.
  EXPECT_FALSE(builder->Build(5, std::vector<float>(7), draft).ok());
  absl::StatusOr<MedusaTree> wide = MedusaTree::FromPaths({{0}, {1}, {2}}, 1);
  ASSERT_TRUE(wide.ok());
  absl::StatusOr<CandidateBuilder> wide_builder = CandidateBuilder::Create(*wide, 100);
  ASSERT_TRUE(wide_builder.ok());
  const absl::Status too_few = wide_builder->Build(5, std::vector<float>(2), std::vector<int32_t>{1, 2});
  EXPECT_EQ(too_few.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_few.message()), ::testing::HasSubstr("draft vocabulary has 2"));
}

TEST(CandidateBuilderTest, ExtraHeadRowsAreIgnored) {
  MedusaTree chain = MedusaTree::Chain(1);
  absl::StatusOr<CandidateBuilder> builder = CandidateBuilder::Create(chain, 4);
  ASSERT_TRUE(builder.ok());
  ASSERT_TRUE(builder->Build(0, HeadLogits({{3}, {1}, {2}}, 4)).ok());
  EXPECT_THAT(builder->node_tokens(), ElementsAre(0, 3));
}

TEST(CandidateBuilderTest, Errors) {
  absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths({{0}, {1}, {2}}, 1);
  ASSERT_TRUE(tree.ok());
  absl::StatusOr<CandidateBuilder> small = CandidateBuilder::Create(*tree, 2);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(small.status()), HasSubstr("top-3"));
  absl::StatusOr<CandidateBuilder> builder = CandidateBuilder::Create(*tree, 5);
  ASSERT_TRUE(builder.ok());
  EXPECT_THAT(Message(builder->Build(0, std::vector<float>(4))), HasSubstr("got 4 values"));
  EXPECT_THAT(Message(builder->Build(5, std::vector<float>(5))), HasSubstr("root token 5"));
}

// On a preset: node n's token is head(n)'s top-(rank(n)+1) token by a full sort.
TEST(CandidateBuilderTest, PresetTokensFollowTheRanks) {
  absl::StatusOr<MedusaTree> tree = LoadTree("default", 4);
  ASSERT_TRUE(tree.ok());
  const int vocab = 300;
  absl::StatusOr<CandidateBuilder> builder = CandidateBuilder::Create(*tree, vocab);
  ASSERT_TRUE(builder.ok());
  std::mt19937 rng(5);
  std::vector<float> logits(4 * vocab);
  for (int step = 0; step < 20; ++step) {
    for (float& x : logits) x = std::normal_distribution<float>(0, 2)(rng);
    const int32_t root = static_cast<int32_t>(rng() % vocab);
    ASSERT_TRUE(builder->Build(root, logits).ok());
    std::vector<std::vector<int32_t>> sorted;
    for (int h = 0; h < 4; ++h) {
      sorted.push_back(SortedTopK(
          std::vector<float>(logits.begin() + h * vocab, logits.begin() + (h + 1) * vocab), 10));
    }
    ASSERT_EQ(builder->node_tokens()[0], root);
    for (int n = 1; n < tree->num_nodes(); ++n) {
      ASSERT_EQ(builder->node_tokens()[n], sorted[tree->head(n)][tree->rank(n)]) << n;
    }
    for (int i = 0; i < tree->num_leaves(); ++i) {
      absl::Span<const int> nodes = tree->retrieval_path(i);
      absl::Span<const int32_t> tokens = builder->path_tokens(i);
      ASSERT_EQ(tokens.size(), nodes.size());
      for (size_t j = 0; j < nodes.size(); ++j) {
        ASSERT_EQ(tokens[j], builder->node_tokens()[nodes[j]]);
      }
    }
  }
}

}  // namespace
}  // namespace medusa
