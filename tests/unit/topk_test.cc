// The CPU's selection of the best logits (kernels/topk.h) beyond what medusa_candidates_test
// covers of TopK: Argmax's ties and NaN, and SelectHeadTopK's layout and draft mapping.

#include "kernels/topk.h"

#include <cmath>
#include <limits>
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
