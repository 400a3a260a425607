#include "tools/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "absl/strings/str_format.h"

namespace medusa::tools {

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

void ProgressBar::Update(double done, double total, double rate, const std::string& rate_unit,
                         const std::string& details) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double fraction = total > 0 ? std::min(1.0, done / total) : 0.0;
  // A resumed run starts part way: the ETA comes from the pace of this run only.
  if (first_done_ < 0) {
    first_done_ = done;
    first_update_ = now;
  }
  const double done_here = done - first_done_;
  const double pace_seconds = std::chrono::duration<double>(now - first_update_).count();
  const double eta = done_here > 0 ? pace_seconds * (total - done) / done_here : NAN;
  constexpr int kWidth = 24;
  const int filled = static_cast<int>(fraction * kWidth);
  line_ = absl::StrFormat("%s [%s%s] %3.0f%% %.0f/%.0f | %.0f %s | %s | %s elapsed, ETA %s", label_,
                          std::string(filled, '#'), std::string(kWidth - filled, ' '), 100 * fraction, done,
                          total, rate, rate_unit, details, FormatDuration(elapsed), FormatDuration(eta));
  // A terminal redraws at most 10 times a second; a log gets a line every 10 s.
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (tty_ && since_draw >= 0.1) {
    std::fprintf(stderr, "\r\033[K%s", line_.c_str());
    last_draw_ = now;
  } else if (!tty_ && since_draw >= 10) {
    std::fprintf(stderr, "%s\n", line_.c_str());
    last_draw_ = now;
  }
}

void ProgressBar::Finish() {
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s\n", line_.c_str());
  } else if (!line_.empty()) {
    std::fprintf(stderr, "%s\n", line_.c_str());
  }
}

}  // namespace medusa::tools
