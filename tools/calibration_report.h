#pragma once
// What `medusa train` and `medusa calibrate` report of the heads' accuracy: the
// calibration file trees are built from (engine/medusa/tree_builder.h reads it) and a
// summary on stderr.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/train/heads_evaluation.h"
#include "nlohmann/json.hpp"
#include "tools/command_options.h"
#include "tools/training_data.h"

namespace medusa::tools {

// {"heads", "prompts", "prompt_count", "rows", "measured_on", "topk_accuracy"} for heads at
// `heads_path`, measured on `held_out` (topk[head][k]: top-(k+1) accuracy) from the hidden states
// of the backend `measured_on` names (Backend::MachineId: its weight types change the accuracies,
// so a tree for a mode is best built from that mode's calibration).
nlohmann::json CalibrationJson(const std::string& heads_path, const CalibrationFlags& calibration,
                               const DistillRun& held_out, const std::vector<std::vector<double>>& topk,
                               const std::string& measured_on);

// Writes the calibration beside the heads (or where --calibration-out says); returns the path.
absl::StatusOr<std::string> WriteCalibration(const std::string& heads_path, const CalibrationFlags& calibration,
                                             const nlohmann::json& json);

absl::Status WriteJson(const std::string& path, const nlohmann::json& value);

// One line per head: top-1, top-5 and top-10 accuracy, after `what`.
void PrintAccuracies(const char* what, const std::vector<std::vector<double>>& topk);

// Adds how often the heads are right together: "chain_top1" [per head] (HeadsAccuracy's) and
// "chain_top1_if_independent" [per head] (the products of the top-1 accuracies); prints both.
void AddChainAccuracy(const HeadsAccuracy& accuracy, nlohmann::json* calibration);

// Adds the heads' fitted temperatures to a calibration JSON: "temperature" [per head], and
// "temperature_fit" {"fit_rows", "eval_rows", "nll_before", "nll_after", "top1_ece_before",
// "top1_ece_after"} (lists per head, on held-out rows the fit did not see); prints them.
void AddTemperatures(const std::vector<HeadTemperatureFit>& fits, nlohmann::json* calibration);

}  // namespace medusa::tools
