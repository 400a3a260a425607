#pragma once
// The `medusa` tool's command line: every flag is defined in flags.cc (the engine's in
// engine_flags.cc) and read there, once, into the command's options (command_options.h),
// by main. Flag names are written with dashes on the command line (--max-tokens); absl
// names them with underscores, and NormalizeFlagNames translates.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/command_options.h"

namespace medusa::tools {

// "--max-tokens=5" -> "--max_tokens=5": dashes inside flag names become underscores.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

// --log-level.
std::string LogLevelFlag();

// Each command's flags; InvalidArgument for a value no command could use.
absl::StatusOr<GenerateCommand> GenerateFlags();
absl::StatusOr<ClientCommand> ClientFlags();
absl::StatusOr<BenchCommand> BenchFlags();
absl::StatusOr<HealthCommand> HealthFlags();
absl::StatusOr<TreeCommand> TreeFlags();
absl::StatusOr<TrainCommand> TrainFlags();
absl::StatusOr<CalibrateCommand> CalibrateFlags();
absl::StatusOr<MakeModelCommand> MakeModelFlags();

}  // namespace medusa::tools
