#pragma once
// Training Medusa-1 heads (Cai et al. 2024), or sequentially dependent Hydra heads (Ankner et
// al. 2024), on self-distillation data, on the CPU. The
// batch math is head_batch.h's, the optimizer adamw.h's, checkpoints trainer_checkpoint.h's;
// evaluation is heads_evaluation.h.
//
// Head k (0-based) is r = h; r = r + SiLU(W_l r + b_l) for each of its blocks; logits =
// P r, with P the head's own projection (trained) or the base model's classifier (shared,
// frozen). A Hydra head's first block reads [h, E(x[t+1]), E(x[t+2]), .., E(x[t+k+1])] instead of
// h (E the model's frozen input embedding): teacher forcing, the path the text took, which is
// the path a tree node has when every draft before it was right. The loss of a batch is
//
//     L = sum_k lambda_k * mean over the batch's valid targets of head k of CE(logits_k, target_k)
//
// with lambda_k = loss_decay^(k+1) (the paper's 0.8^k, k counted from 1). With teacher_weight w > 0
// (trainer_options.h), CE(logits_k, target_k) becomes the cross-entropy with the distribution
// (1 - w) onehot(target_k) + w softmax(C h') (C over the columns the heads train over), h' the
// data's final state at the position before the target (the model's own distribution of that
// token; Hydra++), when the text reaches that row. Each head is normalized by its own count of valid targets (target -1
// marks the text's end: no loss, not counted; a head with no valid target in a batch contributes nothing), as PyTorch's
// CrossEntropyLoss with ignore_index does in the reference trainer.
//
// Gradients are written by hand on top of sgemm. The batch is one [heads * rows, dim]
// matrix of final states, so the shared classifier is one product per step; softmax,
// cross-entropy and dLogits are fused in one sweep per row. AdamW with a warm-up then
// cosine learning rate and global-norm clipping updates the parameters.
//
// Determinism: the same options, seed, data, classifier and thread count give bit-identical
// weights. Rows are shuffled per epoch by a seeded std::mt19937_64 (a function of the seed and
// the epoch alone), work is split across threads statically and every reduction runs in a
// fixed order. A checkpoint holds all the state, so a resumed run continues bit-identically.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/train/distill_set.h"
#include "engine/train/trainer_options.h"
#include "kernels/model/config.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa {

struct TrainProgress {
  int64_t step = 0;         // steps done
  int64_t total_steps = 0;
  int epoch = 0;            // 0-based epoch of the last step
  double lr = 0;            // learning rate of the last step
  // Over the steps since the previous report:
  double loss = 0;                   // mean weighted loss (the objective)
  std::vector<double> head_loss;     // per head: mean cross-entropy over valid targets
  std::vector<double> top1;          // per head: fraction of valid targets that were the argmax
  double tokens_per_second = 0;      // rows (token positions) trained per second, this run
  double elapsed_seconds = 0;        // this run (a resumed run counts from its start)
  double eta_seconds = 0;
};

struct TrainRunOptions {
  std::function<void(const TrainProgress&)> on_progress;  // may be empty
  int progress_every_steps = 10;  // and after the last step
  // Resumes from this file when it exists (it must match the options, the classifier and the
  // data: FailedPrecondition naming what differs otherwise) and writes it every
  // `checkpoint_every_steps` steps (<= 0: only at the end and when stopped). Empty: none.
  std::string checkpoint_path;
  int checkpoint_every_steps = 0;
  // Stops (after writing the checkpoint) when set, or once this many steps are done
  // (> 0); Train then returns Cancelled saying where it stopped.
  const std::atomic<bool>* stop_requested = nullptr;
  int64_t stop_after_step = 0;
};

class HeadsTrainer {
 public:
  // Heads start with every W and b zero (each head starts as the base model's projection,
  // SiLU(0) = 0), and own projections as copies of the classifier.
  // `classifier` [vocab, dim] (the base model's lm_head) must outlive the trainer, as must
  // `embedding` [vocab, dim] (its input embeddings; the classifier when tied), which only
  // Hydra heads need.
  // Sets OpenBLAS to one thread (process-wide, as the CPU backend does): the trainer splits
  // its products across its own threads.
  static absl::StatusOr<HeadsTrainer> Create(const TrainerOptions& options, const ModelConfig& config,
                                             absl::Span<const float> classifier,
                                             absl::Span<const float> embedding = {});
  HeadsTrainer(HeadsTrainer&&) noexcept;
  HeadsTrainer& operator=(HeadsTrainer&&) noexcept;
  ~HeadsTrainer();

  // Trains for options.epochs over `data` (whose first num_heads target columns are used),
  // from where the checkpoint left off, if any.
  absl::Status Train(const DistillSet& data, const TrainRunOptions& run = {});

  const MedusaHeadsWeights& heads() const;
  const TrainerOptions& options() const;
  int64_t step() const;  // optimizer steps taken

  // Replaces the heads (e.g. to fine-tune loaded ones) and resets the optimizer. They must
  // match the options (heads, layers, own projection or not) and the model's dim and vocab.
  absl::Status SetHeads(MedusaHeadsWeights heads);

  // One batch's loss (as above) and its gradients, without an update: `rows` index `data`
  // (at most batch_size of them). Exposed for the gradient check.
  absl::StatusOr<double> ComputeLossAndGradients(const DistillSet& data, absl::Span<const int64_t> rows);
  // Gradients of the last ComputeLossAndGradients, in the heads' shape (no projection when
  // it is shared).
  const MedusaHeadsWeights& gradients() const;

 private:
  struct Impl;
  explicit HeadsTrainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace medusa
