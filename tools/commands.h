#pragma once
// Subcommands of the `medusa` tool. Each returns the process exit code.

namespace medusa::tools {

int RunGenerate();
int RunTree();

}  // namespace medusa::tools
