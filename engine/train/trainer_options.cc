#include "engine/train/trainer_options.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "absl/strings/str_cat.h"

namespace medusa {

absl::Status TrainerOptions::Validate() const {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("trainer options: ", what));
  };
  if (num_heads < 1) return bad(absl::StrCat("num_heads is ", num_heads, ", must be >= 1"));
  if (num_layers < 0) return bad(absl::StrCat("num_layers is ", num_layers, ", must be >= 0"));
  if (num_layers == 0 && share_lm_head) {
    return bad("num_layers is 0 with share_lm_head: the heads would have nothing to train");
  }
  if (batch_size < 1) return bad(absl::StrCat("batch_size is ", batch_size, ", must be >= 1"));
  if (epochs < 1) return bad(absl::StrCat("epochs is ", epochs, ", must be >= 1"));
  if (!(lr > 0.0f) || !std::isfinite(lr)) return bad(absl::StrCat("lr is ", lr, ", must be > 0"));
  if (!(weight_decay >= 0.0f)) return bad(absl::StrCat("weight_decay is ", weight_decay, ", must be >= 0"));
  if (warmup_steps < -1) return bad(absl::StrCat("warmup_steps is ", warmup_steps, ", must be >= -1"));
  if (!(min_lr_ratio >= 0.0f && min_lr_ratio <= 1.0f)) {
    return bad(absl::StrCat("min_lr_ratio is ", min_lr_ratio, ", must be in [0, 1]"));
  }
  if (!(teacher_weight >= 0.0f && teacher_weight <= 1.0f)) {
    return bad(absl::StrCat("teacher_weight is ", teacher_weight, ", must be in [0, 1]"));
  }
  if (!(loss_decay > 0.0f)) return bad(absl::StrCat("loss_decay is ", loss_decay, ", must be > 0"));
  if (!(adam_beta1 >= 0.0f && adam_beta1 < 1.0f) || !(adam_beta2 >= 0.0f && adam_beta2 < 1.0f)) {
    return bad(absl::StrCat("adam betas are ", adam_beta1, " and ", adam_beta2, ", must be in [0, 1)"));
  }
  if (!(adam_eps > 0.0f)) return bad(absl::StrCat("adam_eps is ", adam_eps, ", must be > 0"));
  if (threads < 0) return bad(absl::StrCat("threads is ", threads, ", must be >= 0"));
  if (!draft_vocab.empty() && !share_lm_head) {
    return bad(
        "a draft vocabulary is for heads sharing the classifier; own projections train over the whole vocabulary");
  }
  return absl::OkStatus();
}

int64_t WarmupSteps(const TrainerOptions& options, int64_t total_steps) {
  if (options.warmup_steps >= 0) return std::min<int64_t>(options.warmup_steps, total_steps);
  return (total_steps + 9) / 10;
}

double LearningRate(const TrainerOptions& options, int64_t step, int64_t total_steps) {
  const double peak = options.lr;
  const int64_t warmup = WarmupSteps(options, total_steps);
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t decay_steps = total_steps - warmup;
  const double progress =
      decay_steps > 1 ? std::min(1.0, static_cast<double>(step - warmup) / (decay_steps - 1)) : 0.0;
  const double floor = peak * options.min_lr_ratio;
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace medusa
