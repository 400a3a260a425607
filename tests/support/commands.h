#pragma once
// Running the project's command-line programs from a test, as a user's shell would.

#include <string>

#include "nlohmann/json.hpp"

namespace medusa::testing {

// A shell command's exit code and its output (stdout and stderr together).
struct CommandOutput {
  int exit_code = -1;
  std::string output;
};
CommandOutput RunCommand(const std::string& command);

// The JSON object a `medusa` command printed (discarded when it printed something else);
// the test fails when the command does.
nlohmann::json RunJsonCommand(const std::string& command);

// `medusa generate ... --json` in-process, for comparison: its JSON object.
nlohmann::json GenerateLocally(const std::string& args);

// Shell quoting for one argument.
std::string Quote(const std::string& text);

}  // namespace medusa::testing
