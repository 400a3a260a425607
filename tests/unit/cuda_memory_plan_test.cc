// How the CUDA backend sizes its KV pool from the device's memory (memory_plan.h).

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda/memory_plan.h"

namespace medusa::kernels::cuda {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kGiB = 1ll << 30;

MemoryPlanInput Input(int64_t total, int64_t free, double fraction, int64_t requested, int64_t per_block) {
  MemoryPlanInput in;
  in.total_bytes = total;
  in.free_bytes = free;
  in.fraction = fraction;
  in.requested_kv_bytes = requested;
  in.kv_bytes_per_block = per_block;
  return in;
}

TEST(MemoryPlanTest, TakesTheShareLeftAfterWhatTheProcessHolds) {
  // 80 GiB device, 14 GiB of weights and scratch held: 90% allows 72 - 14 = 58 GiB more.
  const int64_t block = 8ll << 20;  // a 7B model's 16-token block in fp16
  absl::StatusOr<int> blocks =
      PlanKvBlocks(Input(80 * kGiB, 66 * kGiB, 0.9, std::numeric_limits<int64_t>::max(), block));
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_EQ(*blocks, (static_cast<int64_t>(0.9 * 80 * kGiB) - 14 * kGiB) / block);
}

TEST(MemoryPlanTest, NeverTakesMoreThanTheShareIsFreeOrRequested) {
  // 70 GiB in use (by anyone): 90% of 80 leaves 2.
  absl::StatusOr<int> blocks = PlanKvBlocks(Input(80 * kGiB, 10 * kGiB, 0.9, 1ll << 62, kGiB));
  ASSERT_TRUE(blocks.ok());
  EXPECT_EQ(*blocks, 2);
  // The whole device allowed: what is free.
  blocks = PlanKvBlocks(Input(80 * kGiB, 10 * kGiB, 1.0, 1ll << 62, kGiB));
  ASSERT_TRUE(blocks.ok());
  EXPECT_EQ(*blocks, 10);
  blocks = PlanKvBlocks(Input(80 * kGiB, 60 * kGiB, 0.9, 3 * kGiB + 5, kGiB));
  ASSERT_TRUE(blocks.ok());
  EXPECT_EQ(*blocks, 3);
}

TEST(MemoryPlanTest, NoRoomIsResourceExhaustedSayingWhatToChange) {
  absl::StatusOr<int> blocks = PlanKvBlocks(Input(80 * kGiB, 20 * kGiB, 0.5, 1ll << 62, kGiB));
  ASSERT_FALSE(blocks.ok());
  EXPECT_EQ(blocks.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(blocks.status().message(), HasSubstr("--gpu-memory-fraction"));
  EXPECT_THAT(blocks.status().message(), HasSubstr("one block takes"));
}

TEST(MemoryPlanTest, RejectsFractionsOutsideZeroToOneAndEmptySizes) {
  for (double fraction : {0.0, -0.1, 1.01, std::nan("")}) {
    absl::StatusOr<int> blocks = PlanKvBlocks(Input(80 * kGiB, 80 * kGiB, fraction, kGiB, 1 << 20));
    ASSERT_FALSE(blocks.ok()) << fraction;
    EXPECT_EQ(blocks.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(PlanKvBlocks(Input(80 * kGiB, 80 * kGiB, 0.9, kGiB, 0)).ok());
  EXPECT_TRUE(PlanKvBlocks(Input(80 * kGiB, 80 * kGiB, 1.0, kGiB, 1 << 20)).ok());
}

}  // namespace
}  // namespace medusa::kernels::cuda
