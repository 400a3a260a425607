#pragma once
// Turns generated token ids into streamed text: emits only complete UTF-8
// characters, stops at stop tokens and stop strings, and holds back text that
// could still turn out to be the start of a stop string (so a stop string is
// never partly streamed).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/types/span.h"
#include "engine/generate/stop_string_matcher.h"
#include "engine/tokenizer/tokenizer.h"

namespace medusa {

class TextStream {
 public:
  // `previous` is the prompt's last token: SentencePiece drops the leading space
  // of the first word only right after BOS.
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
             absl::Span<const int32_t> stop_ids, int32_t previous);

  // Adds one generated token. Returns true once generation must stop: the token
  // is a stop id or completed a stop string. Tokens after that are ignored.
  bool Push(int32_t id);
  bool stopped() const { return stopped_; }

  // Text that is final now, removed from the pending buffer.
  std::string TakeReady();
  // Everything still pending, at the end of generation.
  std::string TakeRest();

 private:
  // Adds text to pending_; at a stop string, cuts pending_ there and stops.
  void Append(std::string_view text);

  StreamingDetokenizer detokenizer_;
  StopStringMatcher stop_strings_;
  absl::flat_hash_set<int32_t> stop_ids_;
  std::string pending_;
  uint64_t taken_ = 0;  // bytes of text taken out of pending_ so far
  bool stopped_ = false;
};

}  // namespace medusa
