#pragma once
// Subcommands of the `medusa` tool. Each returns the process exit code.

namespace medusa::tools {

int RunGenerate();
int RunTree();
int RunTrain();
int RunCalibrate();

}  // namespace medusa::tools
