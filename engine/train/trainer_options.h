#pragma once
// The settings of Medusa-1 heads training (heads_trainer.h), and its learning-rate schedule.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa {

struct TrainerOptions {
  int num_heads = 4;
  // Medusa-1 heads read h alone; Hydra heads' first block also reads the embeddings of the
  // tokens before the target on its path (teacher-forced: the data's own next token and the
  // earlier heads' targets).
  HeadKind head_kind = HeadKind::kMedusa;
  int num_layers = 1;          // ResBlocks per head
  bool share_lm_head = true;   // true: project with the base classifier (frozen); false: own copies (trained)
  int batch_size = 64;         // rows per step (the last batch of an epoch may be smaller)
  int epochs = 1;
  float lr = 1e-3f;            // peak learning rate
  float weight_decay = 0.0f;   // decoupled (AdamW); applied to W and own projections, never to biases
  int warmup_steps = -1;       // linear warm-up; -1: 10% of the total steps (the reference recipe's warmup_ratio)
  float min_lr_ratio = 0.1f;   // the cosine decays to min_lr_ratio * lr at the last step
  float grad_clip = 1.0f;      // max global gradient norm; <= 0: no clipping
  uint64_t seed = 0;           // row shuffling
  float loss_decay = 0.8f;     // lambda_k = loss_decay^(k+1)
  // What a head learns at each position: 0, the token the model wrote (cross-entropy with it);
  // 1, the model's own distribution over that token, softmax(classifier h) at the position
  // before it (Hydra++'s teacher objective; where the text ends before that position, the
  // token); in between, that mix of the two targets. Needs the data's next tokens.
  float teacher_weight = 0.0f;
  float adam_beta1 = 0.9f;
  float adam_beta2 = 0.999f;
  float adam_eps = 1e-8f;
  int threads = 0;             // 0: all hardware threads (results depend on this count)
  // Heads sharing the classifier train over these tokens alone: the draft vocabulary they will
  // propose from (heads_file.h), a softmax over its logits as at inference. Targets outside it
  // carry no loss (the heads can never propose them). Empty: the whole vocabulary. Ids are
  // checked against the model's vocabulary when the trainer is made.
  std::vector<int32_t> draft_vocab;

  // InvalidArgument naming the field.
  absl::Status Validate() const;
};

// The learning rate of step `step` (0-based) of `total_steps`: linear warm-up to options.lr
// over the warm-up steps (step s gets lr * (s + 1) / warmup), then a half cosine from lr down
// to min_lr_ratio * lr at the last step.
double LearningRate(const TrainerOptions& options, int64_t step, int64_t total_steps);
// The warm-up length used for `total_steps` (resolves warmup_steps = -1).
int64_t WarmupSteps(const TrainerOptions& options, int64_t total_steps);

}  // namespace medusa
