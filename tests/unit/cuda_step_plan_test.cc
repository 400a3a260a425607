// The CUDA backend's step plan (step_plan.h), on the host: for random mixes of decode rows,
// Medusa trees, prompt chunks and irregular rows, every row's keys as the attention kernel
// walks them (shared prefix through the block table, then its masked union entries) are
// exactly the batch's keys in the batch's order; every (row, head, partition) is one task's
// work exactly once; trees and prompt chunks share their prefix in one group; and plans of
// one row capacity put the per-row arrays at the same offsets.

#include <algorithm>
#include <bit>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "engine/generate/batch_planner.h"
#include "engine/medusa/tree.h"
#include "gtest/gtest.h"
#include "kernels/cuda/step_plan.h"

namespace medusa::kernels::cuda {
namespace {

constexpr int kBlockSize = 16;

// The physical slots row `row` of the batch attends to, in order: its prefix, then its extras.
std::vector<int64_t> BatchKeys(const ForwardBatch& batch, int row) {
  const BatchToken& t = batch.tokens[row];
  const auto& table = batch.block_tables[t.seq];
  auto physical = [&](int64_t i) { return static_cast<int64_t>(table[i / kBlockSize]) * kBlockSize + i % kBlockSize; };
  std::vector<int64_t> keys;
  for (int i = 0; i < t.attend_prefix; ++i) keys.push_back(physical(i));
  for (int e = t.extra_begin; e < t.extra_begin + t.extra_count; ++e) keys.push_back(physical(batch.extra_indices[e]));
  return keys;
}

// The same, as the attention kernel finds them in the plan: key i of plan row p is the block
// table's when i < the group's prefix, else the union entry holding the row's (i - prefix)-th
// mask bit.
std::vector<int64_t> PlanKeys(const StepPlan& plan, int p) {
  const int32_t* group = plan.group(plan.array(kPlanRowGroupAt)[p]);
  EXPECT_GE(p, group[kGroupRowBegin]);
  EXPECT_LT(p, group[kGroupRowEnd]);
  const int32_t* table = plan.array(kPlanBlockTablesAt) + group[kGroupTableBegin];
  const int32_t* union_slots = plan.array(kPlanUnionSlotsAt) + group[kGroupUnionBegin];
  const int words = group[kGroupMaskWords];
  const int32_t* mask = plan.array(kPlanMasksAt) + group[kGroupMaskBegin] + (p - group[kGroupRowBegin]) * words;
  std::vector<int> selected;
  for (int i = 0; i < group[kGroupUnionCount]; ++i) {
    if (static_cast<uint32_t>(mask[i / 32]) >> (i % 32) & 1u) selected.push_back(i);
  }
  const int prefix = group[kGroupPrefix];
  const int keys = plan.array(kPlanRowKeysAt)[p];
  EXPECT_EQ(keys, prefix + static_cast<int>(selected.size())) << "plan row " << p;
  std::vector<int64_t> out;
  for (int i = 0; i < keys && i < prefix + static_cast<int>(selected.size()); ++i) {
    out.push_back(i < prefix ? static_cast<int64_t>(table[i / kBlockSize]) * kBlockSize + i % kBlockSize
                             : union_slots[selected[i - prefix]]);
  }
  return out;
}

// Batch rows in plan order: distinct output rows as first asked for, then the rest.
std::vector<int> PlanOrder(const ForwardBatch& batch) {
  std::vector<int> order;
  std::vector<bool> placed(batch.tokens.size(), false);
  for (int32_t row : batch.output_rows) {
    if (!placed[row]) {
      order.push_back(row);
      placed[row] = true;
    }
  }
  for (int row = 0; row < static_cast<int>(batch.tokens.size()); ++row) {
    if (!placed[row]) order.push_back(row);
  }
  return order;
}

void ExpectPlanMatchesBatch(const ForwardBatch& batch, const StepPlan& plan, int heads_per_kv) {
  ASSERT_TRUE(ValidateBatch(batch, 1000, KvCacheSpec{4096, kBlockSize}).ok());
  const std::vector<int> order = PlanOrder(batch);
  const int n = static_cast<int>(batch.tokens.size());
  ASSERT_EQ(plan.rows(), n);
  std::set<int> distinct(batch.output_rows.begin(), batch.output_rows.end());
  ASSERT_EQ(plan.invariant_rows(), static_cast<int>(distinct.size()));
  for (int p = 0; p < n; ++p) {
    const BatchToken& t = batch.tokens[order[p]];
    const auto& table = batch.block_tables[t.seq];
    EXPECT_EQ(plan.array(kPlanTokensAt)[p], t.token);
    EXPECT_EQ(plan.array(kPlanPositionsAt)[p], t.position);
    EXPECT_EQ(plan.array(kPlanKvSlotsAt)[p], table[t.kv_index / kBlockSize] * kBlockSize + t.kv_index % kBlockSize);
    EXPECT_EQ(PlanKeys(plan, p), BatchKeys(batch, order[p])) << "plan row " << p << " (batch row " << order[p] << ")";
  }
  for (size_t i = 0; i < batch.output_rows.size(); ++i) {
    EXPECT_EQ(order[plan.output_row(static_cast<int>(i))], batch.output_rows[i]);
  }
  // Groups: contiguous, never across the output rows' end, at most kMaxGroupUnion shared keys
  // unless a row stands alone.
  int expected_begin = 0;
  for (int g = 0; g < plan.header(kPlanGroups); ++g) {
    const int32_t* group = plan.group(g);
    EXPECT_EQ(group[kGroupRowBegin], expected_begin);
    expected_begin = group[kGroupRowEnd];
    const bool invariant = group[kGroupRowBegin] < plan.invariant_rows();
    if (invariant) {
      EXPECT_LE(group[kGroupRowEnd], plan.invariant_rows());
    }
    EXPECT_EQ(group[kGroupPartitionKeys] == kPartitionKeys, invariant);
    if (group[kGroupRowEnd] - group[kGroupRowBegin] > 1) {
      EXPECT_LE(group[kGroupUnionCount], kMaxGroupUnion);
    }
    EXPECT_LE(group[kGroupRowEnd] - group[kGroupRowBegin], kMaxGroupRows);
  }
  EXPECT_EQ(expected_begin, n);
  // Tasks: every (row, head, partition) exactly once; the invariant rows' tasks first.
  const int32_t* part_begin = plan.array(kPlanPartBeginAt);
  std::map<std::tuple<int, int, int>, int> work;
  for (int t = 0; t < plan.header(kPlanTasks); ++t) {
    const int32_t* task = plan.task(t);
    const int32_t* group = plan.group(task[kTaskGroup]);
    EXPECT_LE(task[kTaskPairEnd] - task[kTaskPairBegin], kPairsPerTask);
    EXPECT_EQ(t < plan.header(kPlanInvariantTasks), group[kGroupRowBegin] < plan.invariant_rows()) << "task " << t;
    for (int pair = task[kTaskPairBegin]; pair < task[kTaskPairEnd]; ++pair) {
      const int row = group[kGroupRowBegin] + pair / heads_per_kv;
      ASSERT_LT(row, group[kGroupRowEnd]);
      if (task[kTaskPartition] < part_begin[row + 1] - part_begin[row]) {
        ++work[{row, pair % heads_per_kv, task[kTaskPartition]}];
      }
    }
  }
  size_t expected_work = 0;
  for (int p = 0; p < n; ++p) {
    const int parts = part_begin[p + 1] - part_begin[p];
    const int keys = plan.array(kPlanRowKeysAt)[p];
    EXPECT_EQ(parts, p < plan.invariant_rows() ? (keys + kPartitionKeys - 1) / kPartitionKeys : 1) << p;
    for (int h = 0; h < heads_per_kv; ++h) {
      for (int k = 0; k < parts; ++k) EXPECT_EQ((work[{p, h, k}]), 1) << "row " << p << " head " << h << " part " << k;
    }
    expected_work += static_cast<size_t>(parts) * heads_per_kv;
  }
  EXPECT_EQ(work.size(), expected_work);
  EXPECT_EQ(plan.header(kPlanParts), part_begin[n]);
}

class BatchMaker {
 public:
  explicit BatchMaker(uint32_t seed) : rng_(seed) {}

  // A sequence with room for `slots` tokens in random, distinct blocks.
  int32_t AddSequence(ForwardBatch& batch, int slots) {
    std::vector<int32_t>& table = tables_.emplace_back();
    std::uniform_int_distribution<int32_t> block(0, 4095);
    while (static_cast<int>(table.size()) * kBlockSize < slots) {
      const int32_t b = block(rng_);
      if (used_.insert(b).second) table.push_back(b);
    }
    return medusa::AddSequence(batch, table);
  }
  std::vector<int32_t> Tokens(int n) {
    std::vector<int32_t> tokens(n);
    for (int32_t& t : tokens) t = std::uniform_int_distribution<int32_t>(0, 999)(rng_);
    return tokens;
  }
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  std::mt19937& rng() { return rng_; }

 private:
  std::mt19937 rng_;
  std::set<int32_t> used_;
  std::deque<std::vector<int32_t>> tables_;  // stable addresses: the batch holds spans of them
};

MedusaTree RandomTree(BatchMaker& maker) {
  const std::vector<std::string> names = TreePresetNames();
  const std::string name = names[maker.Uniform(0, static_cast<int>(names.size()) - 1)];
  return MedusaTree::FromPaths(*TreePresetPaths(name), 8).value();
}

// One random step: decode rows, trees, prompt chunks and rows the engine never makes
// (extras out of order, inside the prefix, repeated, or more than a group holds).
void AppendRandomSequence(BatchMaker& maker, ForwardBatch& batch, std::deque<MedusaTree>& trees) {
  const int context = maker.Uniform(0, 700);
  switch (maker.Uniform(0, 4)) {
    case 0: {  // a plain decode step
      const int32_t seq = maker.AddSequence(batch, context + 1);
      AppendCausal(batch, seq, maker.Tokens(1), context, true);
      break;
    }
    case 1: {  // a Medusa tree
      const MedusaTree& tree = trees.emplace_back(RandomTree(maker));
      const int32_t seq = maker.AddSequence(batch, context + tree.num_nodes());
      AppendTree(batch, seq, tree, maker.Tokens(tree.num_nodes()), context);
      break;
    }
    case 2: {  // a prompt chunk, its last row wanted or not
      const int count = maker.Uniform(1, 150);
      const int32_t seq = maker.AddSequence(batch, context + count);
      AppendCausal(batch, seq, maker.Tokens(count), context, maker.Uniform(0, 1) == 1);
      break;
    }
    default: {  // irregular rows
      const int32_t seq = maker.AddSequence(batch, context + 100);
      const int rows = maker.Uniform(1, 4);
      for (int r = 0; r < rows; ++r) {
        BatchToken t;
        t.token = maker.Tokens(1)[0];
        t.seq = seq;
        t.kv_index = context + maker.Uniform(0, 99);
        t.position = t.kv_index;
        t.attend_prefix = maker.Uniform(0, context);
        t.extra_begin = static_cast<int32_t>(batch.extra_indices.size());
        t.extra_count = maker.Uniform(t.attend_prefix == 0 ? 1 : 0, 90);
        for (int e = 0; e < t.extra_count; ++e) batch.extra_indices.push_back(maker.Uniform(0, context + 99));
        if (maker.Uniform(0, 1) == 1) std::sort(batch.extra_indices.end() - t.extra_count, batch.extra_indices.end());
        batch.tokens.push_back(t);
        if (maker.Uniform(0, 1) == 1) batch.output_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
      }
    }
  }
}

TEST(StepPlanTest, RandomStepsKeepEveryRowsKeysAndCoverEveryTask) {
  for (int heads_per_kv : {1, 3, 8}) {
    StepPlanner planner(kBlockSize, heads_per_kv);
    for (uint32_t seed = 0; seed < 60; ++seed) {
      BatchMaker maker(seed * 7 + heads_per_kv);
      ForwardBatch batch;
      std::deque<MedusaTree> trees;
      const int sequences = maker.Uniform(1, 6);
      for (int s = 0; s < sequences; ++s) AppendRandomSequence(maker, batch, trees);
      // Sometimes an output row asked for twice, out of order.
      if (!batch.output_rows.empty() && maker.Uniform(0, 2) == 0) {
        batch.output_rows.push_back(
            batch.output_rows[maker.Uniform(0, static_cast<int>(batch.output_rows.size()) - 1)]);
      }
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", heads per KV head " << heads_per_kv);
      const int capacity = maker.Uniform(0, 1) == 1 ? static_cast<int>(batch.tokens.size()) + 7 : 0;
      ExpectPlanMatchesBatch(batch, planner.Plan(batch, capacity), heads_per_kv);
      if (HasFailure()) return;
    }
  }
}

TEST(StepPlanTest, AMedusaTreeIsOneGroupReadingItsContextOnce) {
  BatchMaker maker(1);
  const MedusaTree tree = MedusaTree::FromPaths(*TreePresetPaths("mc_sim_7b_63"), 8).value();
  ASSERT_EQ(tree.num_nodes(), 64);
  ForwardBatch batch;
  const int context = 600;
  AppendTree(batch, maker.AddSequence(batch, context + 64), tree, maker.Tokens(64), context);
  StepPlanner planner(kBlockSize, /*heads_per_kv=*/1);
  const StepPlan& plan = planner.Plan(batch);
  ExpectPlanMatchesBatch(batch, plan, 1);
  ASSERT_EQ(plan.header(kPlanGroups), 1);
  EXPECT_EQ(plan.group(0)[kGroupPrefix], context);
  EXPECT_EQ(plan.group(0)[kGroupUnionCount], 64);  // the tree's own slots
  // 64 (node, head) pairs in two tasks, over the 3 partitions of 600 + depth keys.
  EXPECT_EQ(plan.header(kPlanTasks), 2 * 3);
}

TEST(StepPlanTest, APromptChunkSharesItsPrefixSixtyFourRowsAtATime) {
  BatchMaker maker(2);
  ForwardBatch batch;
  const int first = 40, count = 130;
  AppendCausal(batch, maker.AddSequence(batch, first + count), maker.Tokens(count), first, /*want_last_row=*/true);
  StepPlanner planner(kBlockSize, 1);
  const StepPlan& plan = planner.Plan(batch);
  ExpectPlanMatchesBatch(batch, plan, 1);
  // The wanted last row alone (it goes through the invariant path), then 129 rows in groups
  // of 64, 64 and 1.
  ASSERT_EQ(plan.header(kPlanGroups), 4);
  EXPECT_EQ(plan.group(1)[kGroupRowEnd] - plan.group(1)[kGroupRowBegin], 64);
  EXPECT_EQ(plan.group(1)[kGroupPrefix], first + 1);
  EXPECT_EQ(plan.group(1)[kGroupUnionCount], 63);  // the causal triangle past the shared prefix
}

TEST(StepPlanTest, IrregularExtrasStandAloneInTheirOwnOrder) {
  ForwardBatch batch;
  std::vector<int32_t> table = {3, 9};
  const int32_t seq = AddSequence(batch, table);
  BatchToken t;
  t.seq = seq;
  t.kv_index = 20;
  t.position = 20;
  t.attend_prefix = 10;
  t.extra_begin = 0;
  t.extra_count = 4;
  batch.extra_indices = {20, 5, 5, 17};  // descending, inside the prefix, repeated
  batch.tokens = {t, t};
  batch.output_rows = {0};
  StepPlanner planner(kBlockSize, 2);
  const StepPlan& plan = planner.Plan(batch);
  ExpectPlanMatchesBatch(batch, plan, 2);
  EXPECT_EQ(plan.header(kPlanGroups), 2);
}

TEST(StepPlanTest, PlansOfOneCapacityKeepTheirRowArraysInPlace) {
  BatchMaker maker(3);
  StepPlanner planner(kBlockSize, 1);
  std::vector<int> offsets[2];
  for (int i = 0; i < 2; ++i) {
    ForwardBatch batch;
    for (int s = 0; s < 1 + 3 * i; ++s) {
      AppendCausal(batch, maker.AddSequence(batch, 100 + s), maker.Tokens(1), 99 + s, true);
    }
    const StepPlan& plan = planner.Plan(batch, 12);
    for (PlanHeader h : {kPlanTokensAt, kPlanPositionsAt, kPlanKvSlotsAt, kPlanRowKeysAt, kPlanRowGroupAt,
                         kPlanPartBeginAt, kPlanOutputRowsAt, kPlanBlockTablesAt}) {
      offsets[i].push_back(plan.header(h));
    }
    // Rows past the step's are padding: part_begin holds the total there.
    EXPECT_EQ(plan.array(kPlanPartBeginAt)[12], plan.header(kPlanParts));
  }
  EXPECT_EQ(offsets[0], offsets[1]);
}

}  // namespace
}  // namespace medusa::kernels::cuda
