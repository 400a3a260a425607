#pragma once
// A program started by a test as a child process, its stdout and stderr going to a log
// file. Killed (SIGKILL) by the destructor if still running.

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace medusa::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Runs argv[0] with `argv` and this process's environment plus `env` (NAME=VALUE);
  // false when the log cannot be opened or fork fails.
  bool Start(const std::vector<std::string>& argv, const std::vector<std::string>& env,
             const std::string& log_path);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }  // -1 once reaped
  const std::string& log_path() const { return log_path_; }
  std::string Log() const;

  // Whether the child has exited; then `status` (may be null) gets its wait status.
  bool Exited(int* status);
  // Only while the child runs (pid -1 would signal every process).
  void Signal(int signal);
  // Exit code (128 + signal when killed) once the child ends within `timeout`, else nullopt.
  std::optional<int> WaitExit(absl::Duration timeout);

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

}  // namespace medusa::testing
