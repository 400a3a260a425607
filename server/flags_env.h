#pragma once
// Command-line helpers for medusa-server: dashed flag names (--kv-cache-mb) and
// environment overrides (MEDUSA_KV_CACHE_MB=...), which the command line beats.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace medusa::server {

// "--max-running=4" -> "--max_running=4" (absl names flags with underscores); values
// and positional arguments are left alone.
std::vector<std::string> DashesToUnderscores(int argc, char** argv);

// The environment variable that overrides a flag: "kv_cache_mb" -> "MEDUSA_KV_CACHE_MB".
std::string EnvironmentName(absl::string_view flag_name);

// Sets every flag defined in a file `is_ours` accepts from its MEDUSA_<NAME> variable,
// where set. InvalidArgument naming the variable for a value the flag cannot parse. Call
// before parsing the command line.
absl::Status ApplyEnvironmentOverrides(bool (*is_ours)(absl::string_view file));

}  // namespace medusa::server
