#pragma once
// Checkpoints of heads training: the heads, their AdamW moments and the state a resumed
// run must agree with (options, data, classifier, step), in one safetensors file. The heads
// are stored in the reference layout under the `medusa_head.` prefix, so LoadMedusaHeads
// reads a checkpoint as heads too. Internal to engine/train.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/safetensors.h"
#include "engine/train/adamw.h"
#include "engine/train/distill_set.h"
#include "engine/train/trainer_options.h"
#include "kernels/model/config.h"
#include "kernels/model/medusa_heads_weights.h"
#include "nlohmann/json.hpp"

namespace medusa::train_internal {

// What a checkpoint must match for this run to resume it: the options (threads aside; the
// continuation is bit-identical only with the same count), fingerprints of the data and the
// classifier, and the total steps. Save adds the step reached.
nlohmann::json TrainingState(const TrainerOptions& options, const ModelConfig& config,
                             absl::Span<const float> classifier, const DistillSet& data, int64_t total_steps);

// Writes the parameters, their moments and `state` to `path` (whole or not at all).
absl::Status SaveCheckpoint(const std::string& path, absl::Span<const ParamTensor> params,
                            const nlohmann::json& state, const TrainerOptions& options);

struct Checkpoint {
  MedusaHeadsWeights heads;
  int64_t step = 0;
  std::unique_ptr<safetensors::File> file;  // for RestoreMoments
};
// Opens the checkpoint at `path` after checking it was made by a run like `state`:
// FailedPrecondition naming what differs (or that the file is no checkpoint).
absl::StatusOr<Checkpoint> OpenCheckpoint(const std::string& path, const nlohmann::json& state,
                                          const ModelConfig& config, const TrainerOptions& options);
// Copies the checkpoint's AdamW moments into `params` (FailedPrecondition when one is
// missing or of another shape).
absl::Status RestoreMoments(const Checkpoint& checkpoint, const std::string& path,
                            absl::Span<const ParamTensor> params);

}  // namespace medusa::train_internal
