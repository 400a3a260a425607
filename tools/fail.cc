#include "tools/fail.h"

#include <cstdio>
#include <string>

namespace medusa::tools {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "medusa: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

}  // namespace medusa::tools
