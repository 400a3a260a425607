#include "kernels/cuda/step_plan.h"

#include <algorithm>
#include <bit>

namespace medusa::kernels::cuda {
namespace {

// Partition size of rows that are not split (prompt rows nobody reads): larger than any key count.
constexpr int32_t kWholeRow = 1 << 30;

int32_t CeilDiv(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

}  // namespace

bool StepPlanner::Groupable(const BatchToken& t) const {
  const int32_t* extras = batch_->extra_indices.data() + t.extra_begin;
  for (int e = 0; e < t.extra_count; ++e) {
    const int32_t floor = e == 0 ? t.attend_prefix : extras[e - 1] + 1;
    if (extras[e] < floor) return false;
  }
  return true;
}

void StepPlanner::StartGroup(const BatchToken& t, int row, Group* group) const {
  group->row_begin = row;
  group->row_end = row + 1;
  group->seq = t.seq;
  group->prefix = t.attend_prefix;
  group->solo = !Groupable(t);
  const int32_t* extras = batch_->extra_indices.data() + t.extra_begin;
  group->keys.assign(extras, extras + t.extra_count);
}

bool StepPlanner::TryJoin(const BatchToken& t, Group* group) {
  if (group->solo || t.seq != group->seq || group->row_end - group->row_begin >= kMaxGroupRows ||
      group->row_end == invariant_rows_ || !Groupable(t)) {
    return false;
  }
  // The new shared prefix; keys between it and each row's own prefix join the union.
  const int32_t prefix = std::min(group->prefix, t.attend_prefix);
  if (static_cast<int64_t>(group->prefix) - prefix + t.attend_prefix - prefix > kMaxGroupUnion) return false;
  merged_.clear();
  for (int32_t i = prefix; i < std::max(group->prefix, t.attend_prefix); ++i) merged_.push_back(i);
  // Both lists are sorted and past `prefix`; merge them into merged_'s tail without repeats.
  const int32_t* extras = batch_->extra_indices.data() + t.extra_begin;
  size_t a = 0, b = 0;
  const std::vector<int32_t>& u = group->keys;
  while (a < u.size() || b < static_cast<size_t>(t.extra_count)) {
    int32_t next;
    if (b == static_cast<size_t>(t.extra_count) || (a < u.size() && u[a] <= extras[b])) {
      next = u[a++];
    } else {
      next = extras[b++];
    }
    if (merged_.empty() || merged_.back() < next) merged_.push_back(next);
    if (merged_.size() > static_cast<size_t>(kMaxGroupUnion)) return false;
  }
  group->prefix = prefix;
  group->keys.swap(merged_);
  ++group->row_end;
  return true;
}

void StepPlanner::CloseGroup(const Group& group) {
  const int g = static_cast<int>(groups_.size() / kGroupFields);
  const int union_count = static_cast<int>(group.keys.size());
  const int words = CeilDiv(union_count, 32);
  const bool partitioned = group.row_begin < invariant_rows_;
  const int32_t table = table_start_[group.seq];
  const auto& block_table = batch_->block_tables[group.seq];
  groups_.insert(groups_.end(),
                 {group.row_begin, group.row_end, group.prefix, table, static_cast<int32_t>(union_slots_.size()),
                  union_count, static_cast<int32_t>(masks_.size()), words, partitioned ? kPartitionKeys : kWholeRow});
  for (int32_t key : group.keys) {
    union_slots_.push_back(block_table[key / block_size_] * block_size_ + key % block_size_);
  }
  for (int row = group.row_begin; row < group.row_end; ++row) {
    const BatchToken& t = batch_->tokens[order_[row]];
    row_group_[row] = g;
    const size_t mask = masks_.size();
    masks_.resize(mask + words, 0);
    auto set = [&](int bit) { masks_[mask + bit / 32] |= static_cast<int32_t>(1u << (bit % 32)); };
    if (group.solo) {
      for (int i = 0; i < union_count; ++i) set(i);
    } else {
      // The row's keys past the shared prefix: [prefix, attend_prefix), then its extras.
      const int32_t* extras = batch_->extra_indices.data() + t.extra_begin;
      int e = 0;
      for (int i = 0; i < union_count; ++i) {
        const int32_t key = group.keys[i];
        if (key < t.attend_prefix) {
          set(i);
        } else if (e < t.extra_count && extras[e] == key) {
          set(i);
          ++e;
        }
      }
    }
    part_begin_[row + 1] = partitioned ? CeilDiv(keys_[row], kPartitionKeys) : 1;
  }
  // Tasks: the group's (row, head) pairs kPairsPerTask at a time, once per partition.
  const int pairs = (group.row_end - group.row_begin) * heads_per_kv_;
  for (int begin = 0; begin < pairs; begin += kPairsPerTask) {
    const int end = std::min(pairs, begin + kPairsPerTask);
    int32_t parts = 0;
    for (int row = group.row_begin + begin / heads_per_kv_; row <= group.row_begin + (end - 1) / heads_per_kv_; ++row) {
      parts = std::max(parts, part_begin_[row + 1]);
    }
    for (int32_t k = 0; k < parts; ++k) tasks_.insert(tasks_.end(), {g, begin, end, k});
  }
}

const StepPlan& StepPlanner::Plan(const ForwardBatch& batch, int row_capacity) {
  batch_ = &batch;
  const int n = static_cast<int>(batch.tokens.size());
  // Plan order: distinct output rows as first asked for, then the rest in batch order.
  plan_row_of_.assign(n, -1);
  order_.clear();
  for (int32_t row : batch.output_rows) {
    if (plan_row_of_[row] < 0) {
      plan_row_of_[row] = static_cast<int32_t>(order_.size());
      order_.push_back(row);
    }
  }
  invariant_rows_ = static_cast<int>(order_.size());
  for (int32_t row = 0; row < n; ++row) {
    if (plan_row_of_[row] < 0) {
      plan_row_of_[row] = static_cast<int32_t>(order_.size());
      order_.push_back(row);
    }
  }

  table_start_.resize(batch.block_tables.size());
  tables_.clear();
  for (size_t s = 0; s < batch.block_tables.size(); ++s) {
    table_start_[s] = static_cast<int32_t>(tables_.size());
    tables_.insert(tables_.end(), batch.block_tables[s].begin(), batch.block_tables[s].end());
  }
  tokens_.resize(n);
  positions_.resize(n);
  slots_.resize(n);
  keys_.resize(n);
  row_group_.resize(n);
  for (int p = 0; p < n; ++p) {
    const BatchToken& t = batch.tokens[order_[p]];
    tokens_[p] = t.token;
    positions_[p] = t.position;
    slots_[p] = batch.block_tables[t.seq][t.kv_index / block_size_] * block_size_ + t.kv_index % block_size_;
    keys_[p] = t.attend_prefix + t.extra_count;
  }

  groups_.clear();
  union_slots_.clear();
  masks_.clear();
  tasks_.clear();
  part_begin_.assign(n + 1, 0);
  int invariant_tasks = 0;
  Group group;
  for (int p = 0; p < n; ++p) {
    const BatchToken& t = batch.tokens[order_[p]];
    if (p > 0 && TryJoin(t, &group)) continue;
    if (p > 0) CloseGroup(group);
    if (p == invariant_rows_) invariant_tasks = static_cast<int>(tasks_.size() / kTaskFields);
    StartGroup(t, p, &group);
  }
  if (n > 0) CloseGroup(group);
  if (invariant_rows_ == n) invariant_tasks = static_cast<int>(tasks_.size() / kTaskFields);
  for (int p = 0; p < n; ++p) part_begin_[p + 1] += part_begin_[p];

  outputs_.resize(batch.output_rows.size());
  for (size_t i = 0; i < outputs_.size(); ++i) outputs_[i] = plan_row_of_[batch.output_rows[i]];

  std::vector<int32_t>& data = plan_.data;
  data.assign(kPlanHeaderSize, 0);
  data[kPlanRows] = n;
  data[kPlanInvariantRows] = invariant_rows_;
  data[kPlanOutputRows] = static_cast<int32_t>(outputs_.size());
  data[kPlanGroups] = static_cast<int32_t>(groups_.size() / kGroupFields);
  data[kPlanTasks] = static_cast<int32_t>(tasks_.size() / kTaskFields);
  data[kPlanInvariantTasks] = invariant_tasks;
  data[kPlanParts] = part_begin_[n];
  // Per-row arrays take `row_capacity` entries at least, so their offsets depend on it alone.
  auto append = [&](PlanHeader at, const std::vector<int32_t>& v, size_t size, int32_t fill) {
    data[at] = static_cast<int32_t>(data.size());
    data.insert(data.end(), v.begin(), v.end());
    if (size > v.size()) data.insert(data.end(), size - v.size(), fill);
  };
  const size_t rows = std::max(n, row_capacity);
  append(kPlanTokensAt, tokens_, rows, 0);
  append(kPlanPositionsAt, positions_, rows, 0);
  append(kPlanKvSlotsAt, slots_, rows, 0);
  append(kPlanRowKeysAt, keys_, rows, 0);
  append(kPlanRowGroupAt, row_group_, rows, 0);
  append(kPlanPartBeginAt, part_begin_, rows + 1, part_begin_[n]);
  append(kPlanOutputRowsAt, outputs_, std::max(outputs_.size(), static_cast<size_t>(row_capacity)), 0);
  append(kPlanBlockTablesAt, tables_, 0, 0);
  append(kPlanGroupsAt, groups_, 0, 0);
  append(kPlanUnionSlotsAt, union_slots_, 0, 0);
  append(kPlanMasksAt, masks_, 0, 0);
  append(kPlanTasksAt, tasks_, 0, 0);
  return plan_;
}

}  // namespace medusa::kernels::cuda
