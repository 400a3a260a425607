#pragma once
// One decoding step: the only place where a forward pass is planned and run for
// sequences. Every running sequence takes part: those still prefilling with their next
// prompt chunk, those decoding with their Medusa tree (or the root alone) verified by tree
// attention; one batched forward pass runs them all; then each consumes its rows
// (acceptance, KV compaction, streaming). EngineCore drives it for Generate, the server's
// Scheduler and self-distillation alike (vLLM's EngineCore.step() plays this role there).

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/engine.h"
#include "engine/generate/sequence_decoder.h"
#include "engine/medusa/tree.h"
#include "kernels/backend.h"

namespace medusa {

// What one decoding step did, for metrics. A step may also carry prompt chunks of
// newcomers (prefill_tokens > 0), which lengthen it: step-time metrics per mode are
// cleanest from steps without them. batch_size is 0 for a step of prompt chunks only.
struct StepReport {
  int batch_size = 0;        // sequences decoded in this step (prefilling ones excluded)
  bool medusa = false;       // whether any sequence verified a tree
  int tree_nodes = 1;        // nodes per sequence (1 for plain)
  double seconds = 0;        // wall time of the step (heads, forward, acceptance)
  int tokens = 0;            // tokens emitted by all sequences
  std::vector<int> accepted; // per sequence: draft tokens kept
  int lookup_chains = 0;     // sequences that verified a chain looked up in their context
  int prefill_tokens = 0;    // prompt tokens of newcomers processed in the same forward
  int first_tokens = 0;      // newcomers whose prompt ended here (their first token is in `tokens`)
};

struct StepOptions {
  int prefill_chunk = 256;  // prompt tokens per step per prefilling sequence
  // With the engine's auto tree the tree for b decoding sequences is the one measured for
  // b. Without one, the engine's fixed tree is verified while at most this many sequences
  // decode, plain decoding above: each tree node costs about as much compute as a token of
  // a plain step, and a plain step is memory-bound, so trees stop paying past a few
  // sequences. A sequence decoding alone always uses the tree.
  int medusa_max_batch = 4;
  int max_batch = 16;  // the most sequences a step may carry
  // Every this many steps that would verify a tree while only greedy sequences decode, one
  // decodes plainly instead (0: never). Those steps time plain decoding at the batch sizes
  // where Medusa runs, which the server's overhead gauge needs and Medusa-only traffic never
  // gives it. Greedy output is the same either way (only the step count changes); sampled
  // sequences are never probed, so a seeded request's output does not depend on the load.
  int plain_probe_every = 0;
};

class StepRunner {
 public:
  StepRunner(Engine& engine, const StepOptions& options);

  // The tree for a step of `batch` decoding sequences; nullptr: plain decoding.
  const MedusaTree* TreeFor(int batch) const;
  // Whether some batch size up to max_batch verifies trees with draft nodes, and the
  // deepest of those trees (0 when none).
  bool medusa_possible() const { return max_tree_depth_ > 0; }
  int max_tree_depth() const { return max_tree_depth_; }

  // One step over the sequences that have not ended. A sequence that cannot go on (KV
  // memory ran out, a backend error) ends with that error (SequenceDecoder::Fail) and the
  // others go on. Returns the step's report, or nullptr when no forward pass ran.
  const StepReport* Run(absl::Span<SequenceDecoder* const> sequences);

 private:
  // Reserves the decoding sequences' roots, plans their trees, asks the heads for their top
  // tokens for all of them in one call and builds their candidates.
  void PlanDecoding();
  // PlanDecoding's end with dynamic trees: the heads' logits for the `rows` sequences that
  // verify a tree, each one's proposals, and its tree of the engine's budget.
  void BuildDynamicTrees(int rows);
  // PlanDecoding's end with Hydra heads: grows every tree-verifying sequence's tree depth by
  // depth (HydraTreeBuilder), each depth's expansions of all of them in one head call.
  void BuildHydraTrees();
  // The draft nodes a Hydra tree keeps this step: the engine's budget, or the step tree's size.
  int HydraBudget() const;
  // How long a chain looked up in the context a step of `batch` sequences may verify instead of
  // the heads' tree (0: none). Under an auto tree with timings, the length whose expected
  // speedup (1 + the chance of keeping each depth, summed, over the measured step overhead of
  // that many nodes at this batch size) is largest, and only when it beats the heads' tree's
  // expected speedup; without timings, the planner's tree size; for a tree the user chose,
  // EngineOptions::lookup_tokens. Never more than lookup_tokens.
  int LookupBudget(int batch) const;
  // The chance that a context chain's first `depth` tokens are all kept, from the chains verified
  // so far (kLookupPriorWeight optimistic pseudo-chains first, so that chains get tried).
  double LookupKeepRate(int depth) const;
  // Counts what each context chain of the step kept.
  void CountLookupKept(const SequenceDecoder& s);
  // Drops the sequences that have ended from `list`.
  static void DropEnded(std::vector<SequenceDecoder*>& list);

  Engine& engine_;
  const StepOptions options_;
  int max_tree_depth_ = 0;
  int tree_steps_since_probe_ = 0;  // plain_probe_every's count
  // Context chains: per depth d (index d - 1), how many chains reached depth d and how many of
  // those kept their first d tokens.
  std::vector<int64_t> lookup_drafted_, lookup_kept_;
  std::vector<SequenceDecoder*> decoding_, prefilling_;
  const MedusaTree* step_tree_ = nullptr;
  int step_budget_ = 0;  // nodes a dynamic tree keeps this step (0: the whole tree)
  kernels::ForwardBatch batch_;
  kernels::ForwardResult forward_;
  std::vector<float> head_hidden_;
  std::vector<int> head_topk_sizes_;  // the step tree's k per head
  std::vector<int32_t> head_topk_;
  std::vector<float> head_logits_;  // dynamic trees: [rows, heads, draft]
  std::vector<int32_t> path_tokens_;  // Hydra: [rows, depth + 1]
  StepReport report_;
};

}  // namespace medusa
