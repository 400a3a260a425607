#pragma once
// How a sequence's tokens enter a forward batch (kernels/backend.h's BatchToken): every
// forward pass the engine makes is built from these two shapes.
//   causal run: known tokens (a prompt chunk, or a plain decode step's root) at KV slots and
//     positions first, first + 1, ...; each attends to every slot before it and itself.
//   Medusa tree: node n of the tree at KV slot context + n and position context + depth(n);
//     it attends to the context and to its ancestors in the tree, itself included.

#include <cstdint>

#include "absl/types/span.h"
#include "engine/medusa/tree.h"
#include "kernels/backend.h"

namespace medusa {

// Adds a sequence's block table; returns its index, what BatchToken::seq names.
int32_t AddSequence(kernels::ForwardBatch& batch, absl::Span<const int32_t> block_table);

// Adds `tokens` as a causal run of sequence `seq` starting at slot and position `first`.
// With `want_last_row` the last token's output is asked for; returns its index in
// output_rows, else -1.
int AppendCausal(kernels::ForwardBatch& batch, int32_t seq, absl::Span<const int32_t> tokens, int first,
                 bool want_last_row);

// Adds `tree` with its nodes' tokens after `context` cached tokens of sequence `seq`, one
// output row per node in node order; returns the index in output_rows of the root's.
int AppendTree(kernels::ForwardBatch& batch, int32_t seq, const MedusaTree& tree,
               absl::Span<const int32_t> node_tokens, int context);

}  // namespace medusa
