#pragma once
// How a `medusa` command ends on an error: the message on stderr, and the exit code the
// CLI promises (2 for invalid arguments or requests, 1 for other errors).

#include "absl/status/status.h"

namespace medusa::tools {

int Fail(const absl::Status& status);
// 0 for OK, else Fail(status).
int ExitCode(const absl::Status& status);

}  // namespace medusa::tools
