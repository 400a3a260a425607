#pragma once
// Draft tokens looked up in the sequence's own context (prompt lookup decoding): when the
// context's last n tokens occurred before, the tokens that followed them then are proposed
// now, as a chain for the step's tree to verify. Answers repeat their prompt and themselves
// (names, code, lists, a small model's loops), and a repeated n-gram's continuation is right
// far more often than a head's guess: no head call, no weights, no training.

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"

namespace medusa {

class ContextLookup {
 public:
  // n-grams of min_ngram to max_ngram tokens are matched, the longest first (1 <= min_ngram
  // <= max_ngram <= kMaxNgram).
  static constexpr int kMaxNgram = 3;
  ContextLookup(int min_ngram, int max_ngram);

  // Up to `max_tokens` tokens to follow `context` (the prompt and every token chosen since,
  // the step's root last): what followed the most recent earlier occurrence of the longest
  // suffix n-gram that occurred before. Empty when none did. `context` must extend the one
  // of the last call (decoding only appends); the n-grams new to it are indexed here.
  std::vector<int32_t> Propose(absl::Span<const int32_t> context, int max_tokens);

 private:
  // Token ids below 2^21 (every tokenizer we load) pack kMaxNgram of them into one key exactly.
  static constexpr int kIdBits = 21;
  // Indexes the n-grams ending at positions [indexed_, end).
  void Index(absl::Span<const int32_t> context, int end);
  // The key of the n tokens ending at position `last`; false when an id does not fit.
  static bool Key(absl::Span<const int32_t> context, int last, int n, uint64_t* key);

  int min_ngram_, max_ngram_;
  int indexed_ = 0;  // n-grams ending before this position are indexed
  // Per n (index n - 1): n-gram key -> the last position of its most recent occurrence.
  std::vector<absl::flat_hash_map<uint64_t, int32_t>> last_end_;
};

}  // namespace medusa
