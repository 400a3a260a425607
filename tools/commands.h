#pragma once
// Subcommands of the `medusa` tool, each given its flags (command_options.h). Each returns
// the process exit code.

#include "tools/command_options.h"

namespace medusa::tools {

int RunGenerate(const GenerateCommand& command);
int RunTree(const TreeCommand& command);
int RunTrain(const TrainCommand& command);
int RunCalibrate(const CalibrateCommand& command);
int RunClient(const ClientCommand& command);
int RunBench(const BenchCommand& command);
int RunHealth(const HealthCommand& command);
int RunMakeModel(const MakeModelCommand& command);

}  // namespace medusa::tools
