// The paged KV cache's bookkeeping: allocation patterns, fragmentation, reuse
// after free, exhaustion as a clean error, and no leaked block.

#include "engine/kv/block_allocator.h"

#include <algorithm>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace medusa::kv {
namespace {

TEST(BlockAllocatorTest, AllocatesDistinctBlocksUntilExhausted) {
  BlockAllocator pool(8);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(5, &blocks).ok());
  ASSERT_TRUE(pool.Allocate(3, &blocks).ok());
  EXPECT_EQ(std::set<int32_t>(blocks.begin(), blocks.end()).size(), 8u);
  EXPECT_EQ(pool.num_free(), 0);
  absl::Status s = pool.Allocate(1, &blocks);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("KV cache exhausted"), std::string::npos) << s;
  EXPECT_EQ(blocks.size(), 8u) << "a failed allocation must not hand out blocks";
}

TEST(BlockAllocatorTest, AllOrNothing) {
  BlockAllocator pool(4);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(3, &blocks).ok());
  EXPECT_FALSE(pool.Allocate(2, &blocks).ok());
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_EQ(blocks.size(), 3u);
}

TEST(BlockAllocatorTest, FreedBlocksAreReused) {
  BlockAllocator pool(4);
  std::vector<int32_t> a, b;
  ASSERT_TRUE(pool.Allocate(4, &a).ok());
  pool.Free(absl::MakeConstSpan(a).subspan(1, 2));  // free the middle: fragmentation
  ASSERT_TRUE(pool.Allocate(2, &b).ok());
  std::sort(b.begin(), b.end());
  std::vector<int32_t> middle = {a[1], a[2]};
  std::sort(middle.begin(), middle.end());
  EXPECT_EQ(b, middle);
  EXPECT_EQ(pool.num_free(), 0);
}

TEST(BlockAllocatorDeathTest, DoubleFreeAborts) {
  BlockAllocator pool(2);
  std::vector<int32_t> a;
  ASSERT_TRUE(pool.Allocate(1, &a).ok());
  pool.Free(a);
  EXPECT_DEATH(pool.Free(a), "freed twice");
}

TEST(SequenceKvTest, ReserveGrowsByBlocks) {
  BlockAllocator pool(10);
  SequenceKv seq(&pool, 4);
  ASSERT_TRUE(seq.Reserve(1).ok());
  EXPECT_EQ(seq.capacity(), 4);
  ASSERT_TRUE(seq.Reserve(4).ok());
  EXPECT_EQ(seq.block_table().size(), 1u);
  ASSERT_TRUE(seq.Reserve(9).ok());
  EXPECT_EQ(seq.block_table().size(), 3u);
  seq.SetLength(9);
  EXPECT_EQ(seq.BlockOf(8), seq.block_table()[2]);
  EXPECT_EQ(seq.OffsetOf(8), 0);
  EXPECT_EQ(seq.OffsetOf(7), 3);
  EXPECT_EQ(pool.num_used(), 3);
}

TEST(SequenceKvTest, TruncateReturnsBlocksNoLongerNeeded) {
  BlockAllocator pool(10);
  SequenceKv seq(&pool, 4);
  ASSERT_TRUE(seq.Reserve(12).ok());
  seq.SetLength(12);
  seq.Truncate(5);  // slots 0..4 need two blocks
  EXPECT_EQ(seq.length(), 5);
  EXPECT_EQ(seq.block_table().size(), 2u);
  EXPECT_EQ(pool.num_used(), 2);
  seq.Truncate(0);
  EXPECT_EQ(pool.num_used(), 0);
}

TEST(SequenceKvTest, ExhaustionLeavesTheSequenceUsable) {
  BlockAllocator pool(3);
  SequenceKv seq(&pool, 2);
  ASSERT_TRUE(seq.Reserve(4).ok());
  EXPECT_EQ(seq.Reserve(100).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(seq.capacity(), 4);
  EXPECT_TRUE(seq.Reserve(6).ok());
}

TEST(SequenceKvTest, DestructionAndMoveReturnEveryBlock) {
  BlockAllocator pool(16);
  {
    SequenceKv a(&pool, 4);
    ASSERT_TRUE(a.Reserve(10).ok());
    SequenceKv b = std::move(a);
    EXPECT_EQ(pool.num_used(), 3);
    SequenceKv c(&pool, 4);
    ASSERT_TRUE(c.Reserve(4).ok());
    c = std::move(b);  // c's own block returns, b's move over
    EXPECT_EQ(pool.num_used(), 3);
  }
  EXPECT_EQ(pool.num_used(), 0);
}

TEST(SequenceKvTest, RandomWorkloadNeverLeaksOrSharesBlocks) {
  BlockAllocator pool(64);
  std::mt19937 rng(7);
  std::vector<SequenceKv> seqs;
  for (int i = 0; i < 8; ++i) seqs.emplace_back(&pool, 4);
  for (int step = 0; step < 5000; ++step) {
    SequenceKv& s = seqs[rng() % seqs.size()];
    switch (rng() % 4) {
      case 0:
      case 1: {
        int want = s.length() + 1 + static_cast<int>(rng() % 9);
        if (s.Reserve(want).ok()) s.SetLength(want);
        break;
      }
      case 2: s.Truncate(static_cast<int>(rng() % (s.length() + 1))); break;
      case 3: if (rng() % 8 == 0) s.Release(); break;
    }
    // Invariants: blocks are disjoint across sequences and the pool accounts for all.
    std::set<int32_t> owned;
    int total = 0;
    for (const SequenceKv& q : seqs) {
      ASSERT_LE(q.length(), q.capacity());
      ASSERT_LT(q.capacity() - q.length(), 4 + 9 * 4);
      for (int32_t b : q.block_table()) owned.insert(b);
      total += static_cast<int>(q.block_table().size());
    }
    ASSERT_EQ(owned.size(), static_cast<size_t>(total));
    ASSERT_EQ(pool.num_used(), total);
  }
  seqs.clear();
  EXPECT_EQ(pool.num_used(), 0);
}

}  // namespace
}  // namespace medusa::kv
