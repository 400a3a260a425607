#pragma once
// The layout of a step plan's int32 buffer (step_plan.h), shared by the host code that
// writes it and the kernels that read it.

#include <cstdint>

namespace medusa::kernels::cuda {

// Attention splits an output row's keys into partitions of this many (a multiple of 32),
// processed in parallel and combined in order.
inline constexpr int kPartitionKeys = 256;
// The most (row, query head) pairs one attention task serves: 8 warps of 4.
inline constexpr int kPairsPerTask = 32;
inline constexpr int kMaxGroupUnion = 64;
inline constexpr int kMaxGroupRows = 64;

// Header entries of the plan buffer: counts, then the offsets (in int32 entries from the
// buffer's start) of the arrays.
enum PlanHeader : int {
  kPlanRows,           // tokens in the step
  kPlanInvariantRows,  // the first rows: the distinct output rows
  kPlanOutputRows,     // ForwardBatch::output_rows.size() (may repeat rows)
  kPlanGroups,
  kPlanTasks,
  kPlanInvariantTasks,  // the first tasks: those of the invariant rows' groups
  kPlanParts,           // attention partials over all rows
  kPlanTokensAt,        // [rows]
  kPlanPositionsAt,     // [rows] RoPE positions
  kPlanKvSlotsAt,       // [rows] physical slot (block * block_size + offset) receiving the row's K/V
  kPlanRowKeysAt,       // [rows] keys the row attends to (attend_prefix + extra_count)
  kPlanRowGroupAt,      // [rows] the row's group
  kPlanPartBeginAt,     // [rows + 1] the row's partials are [part_begin[r], part_begin[r + 1])
  kPlanOutputRowsAt,    // [output rows] plan row of each of the batch's output rows
  kPlanBlockTablesAt,   // every sequence's block table, one after another
  kPlanGroupsAt,        // [groups][kGroupFields]
  kPlanUnionSlotsAt,    // groups' union keys, physical slots
  kPlanMasksAt,         // groups' row masks: mask_words uint32 per row, bit i = union entry i
  kPlanTasksAt,         // [tasks][kTaskFields]
  kPlanHeaderSize
};

// Fields of one group record.
enum GroupField : int {
  kGroupRowBegin,  // plan rows [row_begin, row_end)
  kGroupRowEnd,
  kGroupPrefix,      // keys [0, prefix) of the sequence, shared by every row
  kGroupTableBegin,  // the sequence's block table in the block tables array
  kGroupUnionBegin,  // the union's slots in the union slots array
  kGroupUnionCount,
  kGroupMaskBegin,  // row (row_begin + i)'s mask at masks[mask_begin + i * mask_words]
  kGroupMaskWords,
  kGroupPartitionKeys,  // keys per partition: kPartitionKeys for output rows, else all keys
  kGroupFields
};

// Fields of one attention task: (row, query head) pairs [pair_begin, pair_end) of a group,
// pair p being row row_begin + p / heads_per_kv and head p % heads_per_kv of the KV head, over
// the keys of one partition. A task runs once per KV head.
enum TaskField : int { kTaskGroup, kTaskPairBegin, kTaskPairEnd, kTaskPartition, kTaskFields };

}  // namespace medusa::kernels::cuda
