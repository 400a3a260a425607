#pragma once
// A one-line progress bar on stderr for long commands (self-distillation,
// training): redrawn in place on a terminal, a plain line every few seconds
// otherwise (logs, CI).

#include <chrono>
#include <string>

namespace medusa::tools {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  // done of total, with `details` after the bar and `rate` `rate_unit` (e.g. tokens/s);
  // the ETA comes from the progress made since the first update.
  void Update(double done, double total, double rate, const std::string& rate_unit, const std::string& details);
  // Ends the line (prints the final state once more).
  void Finish();

 private:
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::string line_;
  // `done` and the time at the first update (a resumed run starts above 0).
  double first_done_ = -1;
  std::chrono::steady_clock::time_point first_update_;
};

// "1h02m", "3m12s", "45s".
std::string FormatDuration(double seconds);

}  // namespace medusa::tools
