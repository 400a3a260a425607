#pragma once
// What a Medusa tree costs on this machine, measured: the time of one verification
// step (every running sequence's whole tree in one batched forward pass, plus the
// heads' logits) against a plain decoding step at the same batch size. With the
// calibrated trees' expected acceleration it picks, per batch size, the tree that
// should decode fastest (`medusa tree --auto`, read back by `--tree auto`).

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/kv/block_allocator.h"
#include "engine/medusa/tree.h"
#include "engine/medusa/tree_builder.h"
#include "kernels/backend.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

// What trees are timed on: a backend with the model and Medusa heads loaded, and the KV
// pool it writes (Engine::timing_target()).
struct TimingTarget {
  kernels::Backend& backend;
  kv::BlockAllocator& kv_pool;
  int kv_block_size = 16;
  int prefill_chunk = 512;  // prompt tokens per forward pass when filling the context
  int threads = 0;          // the backend's threads as configured (0: every core), for the report
};

struct TreeTimingOptions {
  std::vector<int> batch_sizes = {1, 2, 4, 8, 16};
  int context_tokens = 128;  // cached tokens per sequence before the step (cut to fit the model)
  int repeats = 15;          // samples per (batch size, tree), each the mean step over 15 ms; the median is kept
  int warmup = 0;            // untimed rounds first (each timed step already follows kLeadMs of its tree)
};

struct TreeTimings {
  std::vector<int> batch_sizes;
  int context_tokens = 0;                // as used (after fitting the model's context)
  std::vector<std::vector<double>> step_ms;  // [batch size][tree], median milliseconds
};

// Times one verification step for every batch size and tree: b sequences, each with
// `context_tokens` cached tokens (prefilled once), each contributing its whole tree to
// one Forward (node n at slot context + n, position context + depth, attending to the
// context and its ancestors), with hidden states and the heads' logits for b rows when
// the tree has more than the root. A root-only tree is a plain decoding step (logits
// only). Runs of different trees are interleaved so that machine noise hits all alike.
// Every KV block taken is returned before it returns, whatever the outcome.
// InvalidArgument for empty or non-positive sizes or a tree deeper than the loaded heads;
// ResourceExhausted (naming the blocks needed) when the KV pool is too small.
absl::StatusOr<TreeTimings> TimeTreeSteps(const TimingTarget& target, absl::Span<const MedusaTree> trees,
                                          const TreeTimingOptions& options);

struct AutoTreeOptions {
  std::vector<int> tree_sizes = {1, 2, 4, 8, 16, 32, 64};  // nodes besides the root
  TreeTimingOptions timing;
};

// The whole `medusa tree --auto` measurement: greedy trees of each size for the
// calibration (no deeper than the loaded heads; sizes the calibration cannot
// fill are dropped with a warning), plus the root-only tree, timed by TimeTreeSteps;
// overhead = step / plain step at the same batch size, expected_speedup = expected
// acceleration / overhead; per batch size the tree with the largest expected speedup
// above 1, else plain decoding ({"nodes": 0, "paths": []}). Returns
//   {"machine": {"backend", "threads", "id"}, "context_tokens", "repeats", "topk_accuracy",
//    "measurements": [{"batch_size", "nodes", "step_ms", "overhead",
//                      "expected_acceleration", "expected_speedup"}, ...],
//    "choice": {"<batch size>": {"nodes", "paths", "expected_speedup"}, ...}}
// which AutoTree::Parse reads. The backend must have Medusa heads loaded.
absl::StatusOr<nlohmann::json> MeasureAutoTree(const TimingTarget& target, const Calibration& calibration,
                                               const AutoTreeOptions& options);

}  // namespace medusa
