#include "engine/generate/stop_string_matcher.h"

#include <algorithm>

namespace medusa {
namespace {

std::vector<uint32_t> Borders(std::string_view s) {
  std::vector<uint32_t> border(s.size(), 0);
  uint32_t k = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    while (k > 0 && s[i] != s[k]) k = border[k - 1];
    if (s[i] == s[k]) ++k;
    border[i] = k;
  }
  return border;
}

}  // namespace

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop_strings) {
  for (std::string& stop : stop_strings) {
    if (stop.empty()) continue;
    Automaton a;
    a.border = Borders(stop);
    a.stop = std::move(stop);
    automata_.push_back(std::move(a));
  }
}

std::optional<uint64_t> StopStringMatcher::Feed(std::string_view text) {
  std::optional<uint64_t> earliest;
  for (Automaton& a : automata_) {
    bool found = false;  // only a stop string's first completion matters: it begins earliest
    for (size_t i = 0; i < text.size(); ++i) {
      uint32_t k = a.state;
      while (k > 0 && text[i] != a.stop[k]) k = a.border[k - 1];
      if (text[i] == a.stop[k]) ++k;
      if (k == a.stop.size()) {
        if (!found) {
          const uint64_t begin = read_ + i + 1 - a.stop.size();
          earliest = earliest ? std::min(*earliest, begin) : begin;
          found = true;
        }
        k = a.border[k - 1];
      }
      a.state = k;
    }
  }
  read_ += text.size();
  return earliest;
}

size_t StopStringMatcher::held_back() const {
  uint32_t held = 0;
  for (const Automaton& a : automata_) held = std::max(held, a.state);
  return held;
}

}  // namespace medusa
