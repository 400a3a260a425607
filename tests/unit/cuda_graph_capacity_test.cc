// Which captured CUDA graph runs a step (graph_capacity.h).

#include "gtest/gtest.h"
#include "kernels/cuda/graph_capacity.h"

namespace medusa::kernels::cuda {
namespace {

TEST(GraphCapacityTest, TheSmallestCapacityThatHoldsTheStep) {
  EXPECT_EQ(GraphCapacityFor(1), 1);
  EXPECT_EQ(GraphCapacityFor(3), 3);
  EXPECT_EQ(GraphCapacityFor(9), 12);
  EXPECT_EQ(GraphCapacityFor(17), 24);
  EXPECT_EQ(GraphCapacityFor(63), 64);  // a 63-node tree
  EXPECT_EQ(GraphCapacityFor(64), 64);
  EXPECT_EQ(GraphCapacityFor(65), 96);
  EXPECT_EQ(GraphCapacityFor(512), 512);
}

TEST(GraphCapacityTest, NoGraphForEmptyOrLargerSteps) {
  EXPECT_EQ(GraphCapacityFor(0), 0);
  EXPECT_EQ(GraphCapacityFor(513), 0);
}

TEST(GraphCapacityTest, PaddingNeverExceedsHalfTheStep) {
  for (int rows = 1; rows <= 512; ++rows) {
    const int capacity = GraphCapacityFor(rows);
    ASSERT_GE(capacity, rows);
    EXPECT_LE(capacity, rows + (rows + 1) / 2) << rows;
  }
}

}  // namespace
}  // namespace medusa::kernels::cuda
