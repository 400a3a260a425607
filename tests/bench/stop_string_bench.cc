// The cost per generated token of watching for stop strings, at the request limits' worst
// case: 16 stop strings of 256 bytes, 255 'a' and a last byte of their own, and text of 'a'
// broken by a 'b' every 256 bytes (the re-scan then compares the held-back 255 bytes with
// every prefix of every stop string, each differing only at its last byte):
// StopStringMatcher side by side with re-scanning the held-back text after every token
// (the baseline: what TextStream did before the matcher). Medians of per-round means,
// rounds alternating the two.
//
//   build/bin/stop_string_bench [--rounds 15] [--tokens 2000]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/generate/stop_string_matcher.h"

namespace {

using Clock = std::chrono::steady_clock;

// The baseline: after each token, look for every stop string in the pending text and
// find the longest suffix of it that begins a stop string, by direct comparison.
struct Rescan {
  std::vector<std::string> stops;
  std::string pending;
  bool Push(const std::string& text) {
    pending += text;
    for (const std::string& stop : stops) {
      if (pending.find(stop) != std::string::npos) return true;
    }
    size_t held = 0;
    for (const std::string& stop : stops) {
      for (size_t n = std::min(stop.size() - 1, pending.size()); n > held; --n) {
        if (std::string_view(pending).ends_with(std::string_view(stop).substr(0, n))) {
          held = n;
          break;
        }
      }
    }
    pending.erase(0, pending.size() - held);
    return false;
  }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 15, tokens = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--tokens")) tokens = std::atoi(argv[i + 1]);
  }
  std::vector<std::string> stops;
  for (int i = 0; i < 16; ++i) stops.push_back(std::string(255, 'a') + static_cast<char>('A' + i));
  const std::string text = std::string(255, 'a') + "b";  // four bytes a token

  // Per round: the mean and the slowest token's time, in microseconds.
  std::vector<double> rescan_mean, rescan_max, matcher_mean, matcher_max;
  size_t sink = 0;
  auto time_tokens = [&](auto&& push, std::vector<double>& mean, std::vector<double>& max) {
    double total = 0, slowest = 0;
    for (int t = 0; t < tokens; ++t) {
      const std::string piece = text.substr((4 * t) % text.size(), 4);
      const auto start = Clock::now();
      sink += push(piece);
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
      total += us;
      slowest = std::max(slowest, us);
    }
    mean.push_back(total / tokens);
    max.push_back(slowest);
  };
  for (int r = 0; r < rounds; ++r) {
    Rescan rescan{stops, ""};
    time_tokens([&](const std::string& piece) { return size_t{rescan.Push(piece)}; }, rescan_mean, rescan_max);
    medusa::StopStringMatcher matcher(stops);
    time_tokens([&](const std::string& piece) { return matcher.Feed(piece).has_value() + matcher.held_back(); },
                matcher_mean, matcher_max);
  }
  std::printf("16 stop strings x 256 bytes, %d tokens of 4 bytes, medians of %d rounds (sink %zu)\n", tokens, rounds,
              sink);
  std::printf("            mean/token  slowest token\n");
  std::printf("re-scan     %7.3f us   %7.3f us\n", Median(rescan_mean), Median(rescan_max));
  std::printf("matcher     %7.3f us   %7.3f us\n", Median(matcher_mean), Median(matcher_max));
  return 0;
}
