#pragma once
// Structured logs through spdlog on stderr: human-readable text, or one JSON object
// per line ({"time", "level", "logger", "thread", "message"}) for log collectors.

#include <string>

#include "absl/status/status.h"

namespace medusa::server {

// format: "text" or "json"; level: trace, debug, info, warn, error, critical, off.
// InvalidArgument naming the flag for anything else.
absl::Status ConfigureLogging(const std::string& format, const std::string& level);

}  // namespace medusa::server
