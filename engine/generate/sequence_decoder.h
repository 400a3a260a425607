#pragma once
// One request's decoding state, driven one forward pass at a time by StepRunner
// (engine/scheduler/step_runner.h), which puts many sequences in each pass: prefill,
// tree verification, acceptance, KV compaction and streaming are written once, here.
//
// A pass, for each sequence in it:
//   prefilling: AppendPrefill(batch)                          -> Forward -> AfterForward
//   decoding:   ReserveRoot, PlanTree, [heads on hidden()],
//               BuildCandidates, AppendStep(batch)            -> Forward -> AfterForward
// The sequence knows its rows in the batch; the caller owns the batch and the pass.
// Plain decoding is a tree of only the root, so both modes run this same code.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/engine.h"
#include "engine/generate/request.h"
#include "engine/generate/text_stream.h"
#include "engine/medusa/acceptance.h"
#include "engine/medusa/candidates.h"
#include "engine/medusa/context_lookup.h"
#include "engine/medusa/dynamic_tree.h"
#include "engine/sampling/sampler.h"
#include "kernels/backend.h"

namespace medusa {

class SequenceDecoder {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    // Whether Medusa heads may propose for this request: hidden states are kept and
    // PlanTree may pick a tree. False: every step is plain.
    bool use_medusa = false;
    // Initial length of accepted_per_position (accepted_length_counts: one more); a
    // deeper tree grows them.
    int stats_depth = 0;
    StreamCallback on_text;
    const GenerateHooks* hooks = nullptr;  // nullptr: none
  };

  // The request must be valid (ValidateRequest).
  static absl::StatusOr<std::unique_ptr<SequenceDecoder>> Create(Engine& engine, GenerationRequest request,
                                                                 Options options);
  SequenceDecoder(const SequenceDecoder&) = delete;
  SequenceDecoder& operator=(const SequenceDecoder&) = delete;

  bool prefilling() const { return phase_ == Phase::kPrefill && status_.ok(); }
  // Finished (a stop or the length limit) or failed: nothing more to do.
  bool ended() const { return phase_ == Phase::kDone || !status_.ok(); }
  // OK, or the error decoding ended with (Fail).
  const absl::Status& status() const { return status_; }
  bool use_medusa() const { return options_.use_medusa; }
  // Whether the passes must return this sequence's hidden states (heads or an on_token hook).
  bool wants_hidden() const;
  // Whether its rows' logits must come back: rejection sampling reads whole rows. Greedy
  // decoding takes each row's argmax alone (ForwardBatch::want_argmax); typical acceptance
  // asks the backend for row statistics and single logits (ForwardBatch::row_stats,
  // logit_queries) and reads the one row it draws from (Backend::ReadOutputLogits).
  bool wants_logits() const {
    return !request_.sampling.greedy() && request_.acceptance.rule == SamplingAcceptance::kRejection;
  }
  bool samples_typically() const {
    return !request_.sampling.greedy() && request_.acceptance.rule == SamplingAcceptance::kTypical;
  }
  const GenerationRequest& request() const { return request_; }
  int generated() const { return result_.new_tokens(); }

  // Ends decoding with `status` (not OK) and returns every KV block; AfterForward and the
  // step calls are no longer made. Later failures do not replace the first.
  void Fail(absl::Status status);

  // --- Prefill ---
  // Backs the whole prompt with KV blocks (all or nothing: ResourceExhausted).
  absl::Status ReservePrompt();
  // Adds the next up to `max_count` prompt tokens to the batch; the chunk that completes
  // the prompt asks for its last row (the first token).
  void AppendPrefill(kernels::ForwardBatch& batch, int max_count);

  // --- A decoding step ---
  // Backs the root's slot (the token chosen last, whose K/V this step writes).
  // ResourceExhausted when the pool has no block left for it.
  absl::Status ReserveRoot();
  // Picks this step's tree: `tree` (nullptr: plain) when this request may use heads,
  // more than one token is still wanted, the deepest node fits the context and KV
  // blocks for every node can be had; else the root alone. Call after ReserveRoot.
  absl::Status PlanTree(const MedusaTree* tree);
  const MedusaTree& planned_tree() const { return *planned_->tree; }
  // Where a tree was planned and the engine looks up drafts in the context
  // (EngineOptions::lookup_tokens): verifies instead the up to `max_tokens` tokens that followed
  // an earlier occurrence of the context's last tokens, when there is one. Call after PlanTree.
  absl::Status PlanLookupDraft(int max_tokens);
  // Whether this step verifies such a chain (planned_tree() is the chain).
  bool lookup_drafted() const { return lookup_drafted_; }
  // Whether BuildCandidates wants the heads' top tokens (a tree, not drafted from the context,
  // and no draft override).
  bool needs_head_topk() const;
  // Final-normed hidden state of the last kept position: the heads' input.
  absl::Span<const float> hidden() const { return hidden_; }
  // Node tokens from the heads' top tokens (for each of planned_tree().num_heads_used() heads
  // its tree.topk(h) best, one after another: Backend::MedusaHeadTopK), the draft override, or
  // just the root. A step drafted from the context keeps its chain.
  absl::Status BuildCandidates(absl::Span<const int32_t> head_topk);
  // Dynamic trees instead: keeps `budget` nodes of the planned tree (the envelope) by the
  // step's proposals (ChooseDynamicPaths) and plans that tree, with its tokens.
  absl::Status BuildDynamicCandidates(const HeadProposals& proposals, int budget);
  // Or a tree grown elsewhere (Hydra heads: HydraTreeBuilder): its draft nodes' rank paths
  // and tokens, parents before children; no nodes: a plain step. At most as many nodes as the
  // planned tree has, and at most depth_room() deep.
  absl::Status BuildGrownCandidates(const std::vector<std::vector<int>>& paths, absl::Span<const int32_t> tokens);
  // The token this step's tree starts from (the base model's last choice).
  int32_t root() const { return root_; }
  // How deep a tree this step may be: its deepest node must stay inside the model's context.
  int depth_room() const { return config_.max_seq_len - 1 - context_; }
  // Adds the planned tree's nodes to the batch, one output row each.
  void AppendStep(kernels::ForwardBatch& batch);

  // Consumes this sequence's rows of the pass: after the prompt's last chunk, the
  // first token; after a step, acceptance, KV compaction and the accepted tokens.
  // Tokens are streamed through on_text; at the end the rest of the text too.
  // `step_start` times the step (step_seconds).
  absl::Status AfterForward(const kernels::ForwardResult& forward, Clock::time_point step_start);

  // Of the last AfterForward: draft tokens kept, tokens emitted.
  int last_accepted() const { return last_accepted_; }
  int last_emitted() const { return last_emitted_; }
  // Prompt tokens added by the last AppendPrefill.
  int last_prefill_count() const { return last_prefill_count_; }

  // Returns every KV block now (also done by the destructor).
  void Release() { seq_.Release(); }
  // The result once ended(): the generation, or the error it failed with.
  absl::StatusOr<GenerationResult> TakeResult();

 private:
  enum class Phase { kPrefill, kDecode, kDone };
  // Per tree: candidate tokens and acceptance, with buffers reused every step.
  struct TreeState {
    const MedusaTree* tree;
    CandidateBuilder candidates;
    Acceptor acceptor;
  };

  SequenceDecoder(Engine& engine, GenerationRequest request, Options options);
  // The state for `tree`, made on first use (a handful of trees per request at most).
  absl::StatusOr<TreeState*> StateFor(const MedusaTree& tree);
  // Plans a tree made for this step alone, with its candidates.
  void PlanStepTree(std::unique_ptr<MedusaTree> tree, CandidateBuilder candidates);
  absl::Status FinishPrefill(const kernels::ForwardResult& forward);
  absl::Status FinishStep(const kernels::ForwardResult& forward, Clock::time_point step_start);
  // The step's accepted path, by the request's rule, from what the pass returned.
  absl::StatusOr<const AcceptedPath*> Accept(const kernels::ForwardResult& forward);
  // Output row `output_row`'s logits, read from the backend (typical acceptance, plain sampling).
  absl::StatusOr<absl::Span<const float>> ReadRow(int output_row);
  absl::Status Compact(const AcceptedPath& path);
  // Whether the pass returned `rows` output rows of what this sequence reads.
  bool HasRows(const kernels::ForwardResult& forward, size_t rows) const;
  void KeepHidden(const kernels::ForwardResult& forward, int row);
  void CountAccepted(int accepted);
  // Records a generated token chosen by the logits of output row `row` of the pass; true
  // when generation must end.
  bool Emit(int32_t token, const kernels::ForwardResult& forward, int row);
  void Flush(std::string text);
  void Finish();

  Engine& engine_;
  const ModelConfig& config_;
  const GenerationRequest request_;
  const Options options_;
  const std::vector<int32_t> stop_ids_;
  const int prompt_len_;
  const int max_tokens_;
  TextStream stream_;
  Sampler sampler_;
  kv::SequenceKv seq_;  // blocks return when the decoder goes away, however it ends
  MedusaTree root_only_;
  std::unique_ptr<TreeState> plain_;
  std::vector<std::unique_ptr<TreeState>> trees_;
  // This step's dynamic tree and its state (made anew each step).
  std::unique_ptr<MedusaTree> dynamic_tree_;
  std::unique_ptr<TreeState> dynamic_;
  TreeState* planned_ = nullptr;
  std::optional<ContextLookup> lookup_;  // with EngineOptions::lookup_tokens
  bool lookup_drafted_ = false;          // this step verifies a chain from the context
  Phase phase_ = Phase::kPrefill;
  absl::Status status_;
  int prefilled_ = 0;         // prompt tokens handed to passes
  int first_row_ = -1;        // this sequence's first output row in the current pass, -1: none
  size_t stats_begin_ = 0;    // its first entry in the pass's row_stats (typical acceptance: parents)
  size_t queries_begin_ = 0;  // its first entry in the pass's logit_queries
  std::vector<kernels::SoftmaxStats> node_stats_;  // per node: its row's summary (parents only)
  std::vector<float> child_logits_;                // per node: its token's logit in its parent's row
  std::vector<float> row_;           // the row a sampled token is drawn from
  int context_ = 0;           // KV length when the step was planned
  std::vector<float> hidden_;  // final-normed hidden state of the last kept node
  std::vector<kernels::KvSlotCopy> copies_;
  std::vector<int32_t> tokens_;  // prompt and generated so far
  int32_t root_ = -1;
  size_t streamed_ids_ = 0;
  int last_accepted_ = 0;
  int last_emitted_ = 0;
  int last_prefill_count_ = 0;
  Clock::time_point prefill_start_, decode_start_;
  GenerationResult result_;
};

}  // namespace medusa
