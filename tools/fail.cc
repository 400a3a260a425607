#include "tools/fail.h"

#include <cstdio>
#include <string>

namespace medusa::tools {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "medusa: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int ExitCode(const absl::Status& status) { return status.ok() ? 0 : Fail(status); }

}  // namespace medusa::tools
