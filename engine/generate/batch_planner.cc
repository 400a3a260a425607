#include "engine/generate/batch_planner.h"

namespace medusa {

int32_t AddSequence(kernels::ForwardBatch& batch, absl::Span<const int32_t> block_table) {
  batch.block_tables.push_back(block_table);
  return static_cast<int32_t>(batch.block_tables.size()) - 1;
}

int AppendCausal(kernels::ForwardBatch& batch, int32_t seq, absl::Span<const int32_t> tokens, int first,
                 bool want_last_row) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t slot = first + static_cast<int32_t>(i);
    batch.tokens.push_back(
        {.token = tokens[i], .position = slot, .seq = seq, .kv_index = slot, .attend_prefix = slot + 1});
  }
  if (!want_last_row || tokens.empty()) return -1;
  batch.output_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
  return static_cast<int>(batch.output_rows.size()) - 1;
}

int AppendTree(kernels::ForwardBatch& batch, int32_t seq, const MedusaTree& tree,
               absl::Span<const int32_t> node_tokens, int context) {
  const int first_row = static_cast<int>(batch.output_rows.size());
  for (int n = 0; n < tree.num_nodes(); ++n) {
    const absl::Span<const int> ancestors = tree.ancestors(n);
    batch.output_rows.push_back(static_cast<int32_t>(batch.tokens.size()));
    batch.tokens.push_back({.token = node_tokens[n],
                            .position = context + tree.depth(n),
                            .seq = seq,
                            .kv_index = context + n,
                            .attend_prefix = context,
                            .extra_begin = static_cast<int32_t>(batch.extra_indices.size()),
                            .extra_count = static_cast<int32_t>(ancestors.size())});
    for (int a : ancestors) batch.extra_indices.push_back(context + a);
  }
  return first_row;
}

}  // namespace medusa
