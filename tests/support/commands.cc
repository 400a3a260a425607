#include "tests/support/commands.h"

#include <sys/wait.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/test_models.h"

namespace medusa::testing {

CommandOutput RunCommand(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  CommandOutput result;
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

nlohmann::json RunJsonCommand(const std::string& command) {
  const CommandOutput run = RunCommand(command);
  EXPECT_EQ(run.exit_code, 0) << command << "\n" << run.output;
  nlohmann::json parsed = nlohmann::json::parse(run.output, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << run.output;
  return parsed;
}

nlohmann::json GenerateLocally(const std::string& args) {
  return RunJsonCommand(absl::StrCat(BinaryPath("bin/medusa"), " generate --json ", args));
}

std::string Quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  return out + "'";
}

}  // namespace medusa::testing
