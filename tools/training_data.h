#pragma once
// The rows Medusa heads are trained and calibrated on (`medusa train`, `medusa calibrate`):
// the frozen model's own answers to seed or held-out prompts (engine/train/self_distill.h),
// with a progress bar and a cache beside the heads.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/train/distill_set.h"
#include "engine/train/self_distill.h"
#include "nlohmann/json.hpp"
#include "tools/command_options.h"

namespace medusa::tools {

// The model's classifier and input embedding [vocab, dim] in float32, which heads training
// and evaluation read (Hydra heads read the embedding too).
struct BaseMatrices {
  std::vector<float> classifier;        // the embedding when tied
  std::vector<float> untied_embedding;  // empty when tied
  absl::Span<const float> embedding() const { return untied_embedding.empty() ? classifier : untied_embedding; }
};
absl::StatusOr<BaseMatrices> LoadBaseMatrices(const std::string& model_path);

// The HeadKind of `--head-type` (medusa or hydra); InvalidArgument otherwise.
absl::StatusOr<HeadKind> HeadKindOf(const std::string& name);

// Prompt texts to token ids: the chat template when the model has one; prompts longer
// than max_tokens are skipped, and at most `count` are kept (0: all).
std::vector<std::vector<int32_t>> EncodeSeeds(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                              int count, int max_tokens);

// Self-distillation rows and what making them cost.
struct DistillRun {
  DistillSet set;
  int prompts = 0;
  int64_t tokens = 0;
  double seconds = 0;
  bool from_cache = false;
};

// Self-distillation with a progress bar labelled `label`.
absl::StatusOr<DistillRun> Distill(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                   const SelfDistillOptions& options, const std::string& label);

// Held-out rows: greedy answers to the calibration prompts.
absl::StatusOr<DistillRun> CalibrationRows(Engine& engine, int num_heads, const DistillFlags& distill,
                                           const CalibrationFlags& calibration);

// The rows cache: saved with the settings that made them (`fingerprint`), loaded only when
// they match (nullopt otherwise).
absl::Status SaveDistillCache(const std::string& path, const DistillRun& run, const nlohmann::json& fingerprint);
std::optional<DistillRun> LoadDistillCache(const std::string& path, const nlohmann::json& fingerprint);

}  // namespace medusa::tools
