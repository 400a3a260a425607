#pragma once
// A ForwardBatch laid out for the CUDA kernels, on the host: everything a forward pass reads
// per token, in one int32 buffer that one copy uploads. The buffer starts with a header of
// counts and of each array's offset, so kernels find their data through the buffer alone and
// a captured CUDA graph replays any step that fits its shape.
//
// Rows. The batch's output rows come first, each once, in the order first asked for; then
// every other row (prompt tokens whose outputs nobody reads) in batch order. Output rows
// (decode tokens, tree nodes, a prompt's last token) go through the batch-invariant products
// and the partitioned attention below, so a row's result depends on nothing but the row; the
// others may go through cuBLAS.
//
// Query groups. Consecutive rows of one sequence form a group when their keys can be
// written as one shared prefix of the sequence plus a short sorted list of other keys (the
// group's union, at most kMaxGroupUnion), each row taking a subset of the union (its
// ancestor mask, one bit per union entry). A Medusa tree's nodes are one group: the cached
// context is read once per step for all of them, not once per node. So are up to 64
// consecutive tokens of a prompt (causal masks). A row whose extra keys are not ascending,
// or lie inside its prefix, is a group of its own whose union is its extras as given.
//
// Key order. Every row sees its keys in one order whatever its group: its prefix, then its
// extras. Attention walks them in chunks of 32 at fixed positions of that order and, for
// output rows, in partitions of kPartitionKeys keys combined in order, so a tree node and the
// plain decode row it stands for (the same keys) get the same bits.

#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/plan_layout.h"

namespace medusa::kernels::cuda {

struct StepPlan {
  std::vector<int32_t> data;  // header, then the arrays

  int header(PlanHeader field) const { return data[field]; }
  int rows() const { return data[kPlanRows]; }
  int invariant_rows() const { return data[kPlanInvariantRows]; }
  // An array's first entry.
  const int32_t* array(PlanHeader offset_field) const { return data.data() + data[offset_field]; }
  // Plan row of the batch's output row `i` (ForwardBatch::output_rows order).
  int32_t output_row(int i) const { return array(kPlanOutputRowsAt)[i]; }
  const int32_t* group(int g) const { return array(kPlanGroupsAt) + g * kGroupFields; }
  const int32_t* task(int t) const { return array(kPlanTasksAt) + t * kTaskFields; }
};

// Plans batches for one model and cache geometry, reusing its memory from step to step.
class StepPlanner {
 public:
  // `heads_per_kv`: query heads sharing each KV head (grouped-query attention).
  StepPlanner(int block_size, int heads_per_kv) : block_size_(block_size), heads_per_kv_(heads_per_kv) {}

  // The plan of a batch that passed ValidateBatch (kernels/backend.h); valid until the next
  // call. The per-row arrays (and the output rows) are padded to `row_capacity` entries, so
  // every plan of one capacity puts them at the same offsets (a captured graph's arguments).
  const StepPlan& Plan(const ForwardBatch& batch, int row_capacity = 0);

 private:
  struct Group {
    int row_begin = 0, row_end = 0;
    int32_t seq = 0, prefix = 0;
    bool solo = false;          // one row whose union is its extras as given
    std::vector<int32_t> keys;  // the union: logical indices past the prefix
  };
  bool Groupable(const BatchToken& t) const;
  // Adds the row to the group when the union stays within kMaxGroupUnion.
  bool TryJoin(const BatchToken& t, Group* group);
  void StartGroup(const BatchToken& t, int row, Group* group) const;
  void CloseGroup(const Group& group);

  int block_size_;
  int heads_per_kv_;
  const ForwardBatch* batch_ = nullptr;
  StepPlan plan_;
  // Per plan row and per group, built before being packed into plan_.data.
  std::vector<int32_t> order_, plan_row_of_, table_start_;
  std::vector<int32_t> tokens_, positions_, slots_, keys_, row_group_, part_begin_, outputs_;
  std::vector<int32_t> tables_, groups_, union_slots_, masks_, tasks_;
  std::vector<int32_t> merged_;
  int invariant_rows_ = 0;
};

}  // namespace medusa::kernels::cuda
