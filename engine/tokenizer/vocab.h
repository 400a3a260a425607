#pragma once
// Pieces shared by the tokenizer implementations: token types (the numbering of
// SentencePiece and of GGUF's tokenizer.ggml.token_type) and a matcher that finds
// special-token strings in text.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer.h"

namespace medusa::tokenizer_internal {

// Debian's Abseil has its own string_view type (ABSL_OPTION_USE_STD_STRING_VIEW
// is 0): convert where Abseil APIs (StrCat, hash map lookups) take one.
inline absl::string_view AsAbsl(std::string_view s) { return {s.data(), s.size()}; }

enum class TokenType : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Leftmost-longest matching of a fixed set of strings (special tokens), as
// Hugging Face's added-token splitting does.
class SpecialTokenMatcher {
 public:
  struct Match {
    size_t pos = 0;
    size_t length = 0;
    int32_t id = -1;
  };

  void Add(std::string_view text, int32_t id);
  bool empty() const { return count_ == 0; }

  // The longest token starting exactly at text[pos], or length 0.
  Match MatchAt(std::string_view text, size_t pos) const;
  // The leftmost match at or after `from` (longest there), or pos == npos.
  Match FindNext(std::string_view text, size_t from) const;

 private:
  struct Entry {
    std::string text;
    int32_t id;
  };
  // Longest first, and in the order added among equal lengths (the first added wins). A
  // multimap keeps that order at O(log n) per Add: re-sorting a vector on each Add made a
  // vocabulary with a million control tokens take about 12 hours to load.
  std::array<std::multimap<size_t, Entry, std::greater<size_t>>, 256> by_first_byte_;
  size_t count_ = 0;
};

// Splits text at special tokens: calls on_text(segment, continues) for the text between
// matches (non-empty segments only) and on_special(id) for each match. A control token's
// match that overlaps one of `literal` (byte ranges of text that is only text, such as a
// chat message's content) is not a token: its bytes are a text segment of their own, and it
// and the text after it continue the text before (`continues`: no SentencePiece dummy prefix),
// as transformers' sanitize_control_tokens encodes them (`is_control` says which ids are
// control tokens; user-defined tokens match anywhere, as in transformers).
template <typename OnText, typename OnSpecial, typename IsControl = bool (*)(int32_t)>
void SplitAtSpecialTokens(std::string_view text, const SpecialTokenMatcher& matcher, const OnText& on_text,
                          const OnSpecial& on_special, absl::Span<const TextSpan> literal = {},
                          const IsControl& is_control = [](int32_t) { return true; }) {
  auto overlaps_literal = [&](size_t begin, size_t end) {
    for (const TextSpan& span : literal) {
      if (begin < span.end && span.begin < end) return true;
    }
    return false;
  };
  size_t pos = 0, search = 0;
  bool continues = false;
  while (pos < text.size()) {
    SpecialTokenMatcher::Match m = matcher.empty() ? SpecialTokenMatcher::Match{std::string_view::npos, 0, -1}
                                                   : matcher.FindNext(text, search);
    const size_t end = m.pos == std::string_view::npos ? text.size() : m.pos;
    if (end > pos) on_text(text.substr(pos, end - pos), continues);
    if (m.pos == std::string_view::npos) break;
    continues = is_control(m.id) && overlaps_literal(m.pos, m.pos + m.length);
    if (continues) {
      on_text(text.substr(m.pos, m.length), true);
    } else {
      on_special(m.id);
    }
    pos = search = m.pos + m.length;
  }
}

// The byte of a byte-fallback piece "<0xNN>" (upper- or lower-case hex), or -1.
int ParseBytePiece(std::string_view piece);

// Control tokens that end a turn in common chat formats; together with EOS they
// are a vocabulary's stop ids.
inline constexpr std::string_view kEndOfTurnPieces[] = {
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>",
};

}  // namespace medusa::tokenizer_internal
