#pragma once
// One batch of self-distillation rows through every Medusa head, forward and backward, with
// hand-written gradients on sgemm: the math of the heads trainer (heads_trainer.h) and of
// its evaluation (heads_evaluation.h). Internal to engine/train.
//
// The final states of all heads are one stacked matrix [heads * rows, dim] (head k's rows
// from k * rows), so a shared classifier projects the whole batch in one product. The big
// products are split across threads by vocabulary columns, not by rows: sgemm packs its B
// operand (the [vocab, dim] projection, 113 MB for SmolLM2) on every call, and a column
// split packs each part of it once instead of once per thread. Every split is static and
// every reduction runs in a fixed order, so results depend only on the thread count.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/train/distill_set.h"
#include "kernels/math/thread_pool.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa::train_internal {

// Buffers for one batch of up to `capacity` rows through every head.
struct HeadBatch {
  int heads = 0, layers = 0, dim = 0, vocab = 0, capacity = 0;
  int rows = 0;  // of the current batch

  std::vector<float> hidden;        // [capacity, dim]
  std::vector<float> inputs;        // [heads][layers][capacity, dim]: block l's input
  std::vector<float> pre;           // [heads][layers][capacity, dim]: W r + b
  std::vector<float> final_states;  // [heads * rows, dim]
  std::vector<float> logits;        // [heads * rows, vocab]; dLogits after the loss sweep
  std::vector<float> d_final;       // [heads * rows, dim]
  std::vector<float> d_partial;     // [threads - 1][heads * rows, dim]: BackpropProjection's other slices
  std::vector<float> d_state;       // [heads][capacity, dim]
  std::vector<float> d_pre;         // [heads][capacity, dim]
  std::vector<int32_t> targets;     // [heads * rows]
  // Hydra heads: the model's input embeddings [vocab, dim] (set by the caller), each row's
  // next token, and head k's first-block input [capacity, (k + 2) * dim] (h, then its path's
  // embeddings; zeros for a token past the text's end).
  absl::Span<const float> embedding;
  std::vector<int32_t> next;                    // [capacity]
  std::vector<std::vector<float>> path_inputs;  // [heads]
  // Teacher targets (TrainerOptions::teacher_weight): stacked row m = k * rows + i holds the
  // model's final state at the position before head k's target, when the text reaches it
  // (has_teacher[m]), and the logits of that state after ProjectTeacher.
  std::vector<float> teacher_states;  // [heads * rows, dim]
  std::vector<float> teacher_logits;  // [heads * rows, vocab]
  std::vector<char> has_teacher;      // [heads * rows]
  std::vector<double> row_loss;     // [heads * rows]: cross-entropy (0 for no target)
  std::vector<int32_t> row_rank;    // [heads * rows]: logits above the target's

  // `training`: buffers for the backward pass too; `vocab_rows`: whether logits get a
  // buffer here (not when they go to the caller's).
  // `kind` Hydra: the path inputs too; `teacher`: the teacher targets' buffers.
  void Allocate(int h, int l, int d, int v, int cap, int threads, bool training, bool vocab_rows = true,
                HeadKind kind = HeadKind::kMedusa, bool teacher = false);
  float* Input(int k, int l) { return inputs.data() + Block(k, l); }
  float* Pre(int k, int l) { return pre.data() + Block(k, l); }
  float* Final(int k) { return final_states.data() + static_cast<size_t>(k) * rows * dim; }
  float* DState(int k) { return d_state.data() + static_cast<size_t>(k) * capacity * dim; }
  float* DPre(int k) { return d_pre.data() + static_cast<size_t>(k) * capacity * dim; }

 private:
  size_t Block(int k, int l) const { return (static_cast<size_t>(k) * layers + l) * capacity * dim; }
};

// `threads` > 0, or every hardware thread.
int ResolveThreads(int threads);
// Start of slice t of [0, n) split into `threads` equal parts.
int SliceBegin(int n, int t, int threads);

// InvalidArgument unless the classifier is [vocab, dim].
absl::Status CheckClassifier(absl::Span<const float> classifier, int vocab, int dim);
// InvalidArgument unless Hydra heads have an embedding [vocab, dim] (anything goes for Medusa heads).
absl::Status CheckEmbedding(HeadKind kind, absl::Span<const float> embedding, int vocab, int dim);
// Checks `data` against heads of this shape: InvalidArgument naming the mismatch (Hydra heads
// need the data's next tokens).
absl::Status CheckData(const DistillSet& data, int num_heads, int dim, int vocab, HeadKind kind = HeadKind::kMedusa);
// Heads whose every value is zero (own projections when `with_projection`).
MedusaHeadsWeights ZeroHeads(int num_heads, int num_layers, int dim, int vocab, bool with_projection,
                             HeadKind kind = HeadKind::kMedusa);

// Copies the rows' hidden states, head-major targets and (Hydra) next tokens into the batch.
void Gather(const DistillSet& data, const int64_t* rows, int count, HeadBatch& batch);
// The teacher states of the rows Gather took (data.RowAhead finds each head's position).
void GatherTeacher(const DistillSet& data, const int64_t* rows, int count, HeadBatch& batch);
// teacher_logits = teacher_states `projection`^T (a [vocab, dim] matrix shared by every head).
void ProjectTeacher(absl::Span<const float> projection, HeadBatch& batch, math::ThreadPool& pool);
// Every head's blocks on the batch, keeping each input and pre-activation for the backward
// pass; the results go to the stacked final states.
void ForwardBlocks(const MedusaHeadsWeights& w, HeadBatch& batch, math::ThreadPool& pool);
// Every head's logits (after ForwardBlocks) into `logits` [heads * rows, vocab].
void Project(const MedusaHeadsWeights& w, absl::Span<const float> classifier, HeadBatch& batch, float* logits,
             math::ThreadPool& pool);
// One row's softmax, cross-entropy and dLogits, in place. The row's target distribution is
// (1 - teacher_weight) on `target` plus teacher_weight times softmax(`teacher`), or all on
// `target` when `teacher` is null; `teacher` is overwritten with that softmax. `scale` is the
// row's weight in the loss; returns the cross-entropy, and `top1` says whether no logit exceeds
// the target's. A row without target (-1) gets zero gradients and loss.
double LossRow(float* row, int vocab, int target, float scale, bool* top1, float* teacher = nullptr,
               float teacher_weight = 0.0f);
// d_final = dLogits P, from the logits' gradients LossRow left in the batch.
void BackpropProjection(const MedusaHeadsWeights& w, absl::Span<const float> classifier, HeadBatch& batch,
                        math::ThreadPool& pool);
// dP_k = dLogits_k^T final_k for every head with its own projection.
void ProjectionGradients(HeadBatch& batch, MedusaHeadsWeights& grads, math::ThreadPool& pool);
// Every head's blocks backwards from d_final: the gradients of W and b.
void BackwardBlocks(const MedusaHeadsWeights& w, HeadBatch& batch, MedusaHeadsWeights& grads,
                    math::ThreadPool& pool);

// Logits strictly above the target's (0: the target is an argmax).
int32_t RankOf(const float* row, int vocab, int target);
// The target's rank among the draft vocabulary's tokens (those whose logits are strictly
// above it), or `miss` when the heads cannot propose the target at all.
int32_t DraftRankOf(const float* row, absl::Span<const int32_t> draft, const std::vector<char>& in_draft, int target,
                    int32_t miss);

}  // namespace medusa::train_internal
