#pragma once
// Finds stop strings in text that arrives piece by piece, in time linear in the text:
// one Knuth-Morris-Pratt automaton per stop string, whose state is also the length of
// the longest suffix of the text so far that could still grow into that stop string
// (the text a stream must hold back). Re-scanning the held-back text after every token
// instead costs up to (stop strings x their bytes^2) byte comparisons per token.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace medusa {

class StopStringMatcher {
 public:
  // Empty stop strings are ignored.
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  // Reads `text`, which continues the text read so far. Returns where (counting every
  // byte ever read, from 0) the earliest stop string completed within `text` begins;
  // nullopt when none completed.
  std::optional<uint64_t> Feed(std::string_view text);

  // Bytes at the end of the text read so far that are the start of a stop string.
  size_t held_back() const;

 private:
  struct Automaton {
    std::string stop;
    std::vector<uint32_t> border;  // border[i]: longest proper border of stop[0..i]
    uint32_t state = 0;            // bytes of stop matched by the text's end
  };
  std::vector<Automaton> automata_;
  uint64_t read_ = 0;
};

}  // namespace medusa
