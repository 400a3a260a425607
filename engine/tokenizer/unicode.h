#pragma once
// The little Unicode the tokenizers need: UTF-8 decoding that never fails (an
// invalid byte is one "character" of its own), the code point classes of the
// GPT-2 pre-tokenizer regex, and repair of invalid UTF-8.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace medusa::unicode {

// The replacement character U+FFFD in UTF-8.
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

struct DecodedChar {
  char32_t code_point;  // U+FFFD when !valid
  int length;           // bytes consumed: 1..4; 1 for an invalid byte
  bool valid;
};

// Decodes the character starting at text[pos] (pos < text.size()). Overlong
// forms, surrogates, code points past U+10FFFF and truncated sequences are
// invalid and consume exactly one byte.
DecodedChar DecodeUtf8(std::string_view text, size_t pos);

// Length of the UTF-8 character at text[pos], or 1 for an invalid byte.
inline int CharLength(std::string_view text, size_t pos) {
  if (static_cast<unsigned char>(text[pos]) < 0x80) return 1;
  return DecodeUtf8(text, pos).length;
}

void AppendUtf8(char32_t code_point, std::string* out);

// Classes used by `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
enum class CodepointClass : uint8_t { kOther = 0, kLetter, kNumber, kWhitespace };
CodepointClass ClassOf(char32_t code_point);

// Appends the longest prefix of `bytes` that is complete UTF-8 to *out, with
// every byte that can never start or continue a valid character replaced by
// U+FFFD (one per maximal invalid subpart, as Python's errors="replace" does).
// A truncated but so far valid sequence at the end is left alone unless `final`,
// in which case it becomes one U+FFFD. Returns the number of bytes consumed.
size_t AppendValidUtf8(std::string_view bytes, bool final, std::string* out);

}  // namespace medusa::unicode
