// The CPU's selection of the best logits (kernels/topk.h) beyond what medusa_candidates_test
// covers of TopK: Argmax's ties and NaN, and SelectHeadTopK's layout and draft mapping.

#include "kernels/topk.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace medusa::kernels {
namespace {

TEST(ArgmaxTest, FirstOfTheLargestAndNaNSkipped) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(Argmax(std::vector<float>{1, 3, 2, 3}), 1);
  EXPECT_EQ(Argmax(std::vector<float>{-5}), 0);
  EXPECT_EQ(Argmax(std::vector<float>{nan, -1, 4, nan, 4}), 2);
  EXPECT_EQ(Argmax(std::vector<float>{-std::numeric_limits<float>::infinity(), nan}), 0);
  EXPECT_EQ(Argmax(std::vector<float>{nan, nan}), 0);
}

// The entry-by-entry definition: the first of the largest numbers, NaN below every number.
int32_t ScalarArgmax(const std::vector<float>& row) {
  int32_t best = 0;
  for (size_t i = 1; i < row.size(); ++i) {
    if (row[i] > row[best] || (std::isnan(row[best]) && !std::isnan(row[i]))) best = static_cast<int32_t>(i);
  }
  return best;
}

TEST(ArgmaxTest, VocabularyRowsAgreeWithTheEntryByEntryDefinition) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-3, 3);  // few distinct values: ties across blocks
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 2000);
    std::vector<float> row(n);
    for (float& v : row) {
      const int kind = static_cast<int>(rng() % 20);
      v = kind == 0 ? nan : kind == 1 ? -inf : static_cast<float>(small(rng));
    }
    if (trial % 7 == 0) std::fill(row.begin(), row.end(), trial % 2 ? nan : -inf);
    if (trial % 11 == 0) row[rng() % n] = inf;
    EXPECT_EQ(Argmax(row), ScalarArgmax(row)) << "trial " << trial << ", " << n << " entries";
  }
}

TEST(SelectHeadTopKTest, RowsThenHeadsEachHeadsBestFirstThroughTheDraft) {
  // 2 rows x 2 heads x 4 entries.
  const std::vector<float> logits = {0, 5, 1, 5,   // row 0 head 0
                                     9, 8, 7, 6,   // row 0 head 1
                                     1, 2, 3, 4,   // row 1 head 0
                                     4, 4, 4, 4};  // row 1 head 1
  TopK selector;
  std::vector<int32_t> ids;
  SelectHeadTopK(logits, 2, 4, std::vector<int>{2, 3}, {}, &selector, &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 0, 1, 2, 3, 2, 0, 1, 2}));
  SelectHeadTopK(logits, 2, 4, std::vector<int>{1, 1}, std::vector<int32_t>{40, 41, 42, 43}, &selector, &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{41, 40, 43, 40}));
}

}  // namespace
}  // namespace medusa::kernels
