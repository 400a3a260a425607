#pragma once
// The GPT-2 pre-tokenizer, written out by hand (no Unicode regex library):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// This is what Hugging Face's ByteLevel pre-tokenizer (use_regex) applies. With
// Pattern::kLlama3, Llama 3's split instead:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+

#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/tokenizer/unicode.h"

namespace medusa::tokenizer_internal {

struct TextPiece {
  uint32_t start;
  uint32_t length;
};

class Gpt2PreTokenizer {
 public:
  enum class Pattern { kGpt2, kLlama3 };
  // individual_digits: every \p{N} character becomes a piece of its own before
  // the regex runs on the text between them (Hugging Face's
  // Digits(individual_digits=True), llama.cpp's "smollm"/"starcoder" rules).
  explicit Gpt2PreTokenizer(bool individual_digits = false, Pattern pattern = Pattern::kGpt2)
      : individual_digits_(individual_digits), pattern_(pattern) {}

  // Replaces *pieces with the pieces of `text` (byte offsets into it).
  void Split(std::string_view text, std::vector<TextPiece>* pieces) const;

 private:
  struct Char {
    uint32_t start;
    uint8_t length;
    unicode::CodepointClass cls;
    char32_t code_point;
  };
  // Applies the regex to chars[begin, end), which is a text of its own.
  void SplitRange(const std::vector<Char>& chars, size_t begin, size_t end,
                  std::vector<TextPiece>* pieces) const;
  // Llama 3's pattern on chars[begin, end).
  void SplitRangeLlama3(const std::vector<Char>& chars, size_t begin, size_t end, std::vector<TextPiece>* pieces) const;

  bool individual_digits_;
  Pattern pattern_;
};

}  // namespace medusa::tokenizer_internal
