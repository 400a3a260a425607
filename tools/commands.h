#pragma once
// Subcommands of the `medusa` tool. Each returns the process exit code.

namespace medusa::tools {

int RunGenerate();
int RunTree();
int RunTrain();
int RunCalibrate();
int RunClient();
int RunBench();

}  // namespace medusa::tools
