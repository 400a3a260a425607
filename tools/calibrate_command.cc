// `medusa calibrate`: per-head top-1..10 accuracy of Medusa heads on held-out prompts,
// the calibration that Medusa trees are built from.

#include <cstdio>

#include "engine/engine.h"
#include "engine/medusa/heads_file.h"
#include "engine/train/heads_evaluation.h"
#include "kernels/base/status_macros.h"
#include "tools/calibration_report.h"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/training_data.h"

namespace medusa::tools {

namespace {

absl::Status Calibrate(const CalibrateCommand& command) {
  const std::string& heads_path = command.heads;
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(command.engine));
  ASSIGN_OR_RETURN(MedusaHeadsWeights heads, LoadMedusaHeads(heads_path, engine->config()));
  ASSIGN_OR_RETURN(BaseMatrices base, LoadBaseMatrices(command.engine.model_path));
  ASSIGN_OR_RETURN(DistillRun held_out, CalibrationRows(*engine, heads.num_heads, command.distill, command.calibration));
  ASSIGN_OR_RETURN(HeadsAccuracy accuracy,
                   EvaluateHeads(heads, base.classifier, held_out.set, 10, 0, base.embedding()));
  const std::vector<std::vector<double>>& topk = accuracy.topk;
  PrintAccuracies("", topk);
  ASSIGN_OR_RETURN(std::vector<HeadTemperatureFit> temperatures,
                   FitHeadTemperatures(heads, base.classifier, held_out.set, 1000, 0, base.embedding()));
  nlohmann::json json = CalibrationJson(heads_path, command.calibration, held_out, topk, engine->backend().MachineId());
  AddChainAccuracy(accuracy, &json);
  AddTemperatures(temperatures, &json);
  ASSIGN_OR_RETURN(std::string path, WriteCalibration(heads_path, command.calibration, json));
  std::fprintf(stderr, "wrote %s\n", path.c_str());
  return absl::OkStatus();
}

}  // namespace

int RunCalibrate(const CalibrateCommand& command) { return ExitCode(Calibrate(command)); }

}  // namespace medusa::tools
