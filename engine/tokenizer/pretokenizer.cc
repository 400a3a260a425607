#include "engine/tokenizer/pretokenizer.h"

namespace medusa::tokenizer_internal {
namespace {

using unicode::CodepointClass;

char32_t AsciiLower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

// Length (in characters) of a contraction 's 't 're 've 'm 'll 'd at chars[i], or 0;
// `any_case` also takes 'S, 'Re, ... (Llama 3's (?i:...)).
template <typename Chars>
size_t ContractionLength(const Chars& chars, size_t i, size_t end, bool any_case = false) {
  if (chars[i].code_point != '\'' || i + 1 >= end) return 0;
  auto at = [&](size_t k) { return any_case ? AsciiLower(chars[k].code_point) : chars[k].code_point; };
  const char32_t a = at(i + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= end) return 0;
  const char32_t b = at(i + 2);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

bool IsNewline(char32_t c) { return c == '\r' || c == '\n'; }

// chars[..end) being split into *pieces: the patterns' building blocks.
template <typename Chars>
struct Splitting {
  const Chars& chars;
  size_t end;
  std::vector<TextPiece>* pieces;

  bool Is(size_t i, CodepointClass cls) const { return i < end && chars[i].cls == cls; }
  // The end of the run of `cls` characters from i.
  size_t RunEnd(size_t i, CodepointClass cls) const {
    while (Is(i, cls)) ++i;
    return i;
  }
  void Emit(size_t from, size_t to) const {
    const uint32_t start = chars[from].start;
    pieces->push_back({start, chars[to - 1].start + chars[to - 1].length - start});
  }
};

}  // namespace

void Gpt2PreTokenizer::Split(std::string_view text, std::vector<TextPiece>* pieces) const {
  pieces->clear();
  // The per-call vector is the one allocation of a split; the text is decoded once.
  std::vector<Char> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const unicode::DecodedChar c = unicode::DecodeUtf8(text, pos);
    // An invalid byte is a character of its own, of no class (never produced
    // from Python strings, but we must not fail on it).
    const CodepointClass cls = c.valid ? unicode::ClassOf(c.code_point) : CodepointClass::kOther;
    chars.push_back({static_cast<uint32_t>(pos), static_cast<uint8_t>(c.length), cls,
                     c.valid ? c.code_point : 0xFFFD});
    pos += c.length;
  }
  auto split = [&](size_t begin, size_t end) {
    if (pattern_ == Pattern::kLlama3) {
      SplitRangeLlama3(chars, begin, end, pieces);
    } else {
      SplitRange(chars, begin, end, pieces);
    }
  };
  if (!individual_digits_) {
    split(0, chars.size());
    return;
  }
  size_t begin = 0;
  for (size_t i = 0; i < chars.size(); ++i) {
    if (chars[i].cls != CodepointClass::kNumber) continue;
    split(begin, i);
    pieces->push_back({chars[i].start, chars[i].length});
    begin = i + 1;
  }
  split(begin, chars.size());
}

void Gpt2PreTokenizer::SplitRangeLlama3(const std::vector<Char>& chars, size_t begin, size_t end,
                                        std::vector<TextPiece>* pieces) const {
  const Splitting<std::vector<Char>> split{chars, end, pieces};
  size_t i = begin;
  while (i < end) {
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (const size_t n = ContractionLength(chars, i, end, /*any_case=*/true); n > 0) {
      split.Emit(i, i + n);
      i += n;
      continue;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    const bool prefix = !IsNewline(chars[i].code_point) && chars[i].cls != CodepointClass::kLetter &&
                        chars[i].cls != CodepointClass::kNumber;
    if (split.Is(i, CodepointClass::kLetter) || (prefix && split.Is(i + 1, CodepointClass::kLetter))) {
      const size_t to = split.RunEnd(split.Is(i, CodepointClass::kLetter) ? i : i + 1, CodepointClass::kLetter);
      split.Emit(i, to);
      i = to;
      continue;
    }
    // \p{N}{1,3}
    if (split.Is(i, CodepointClass::kNumber)) {
      size_t to = i;
      while (to < i + 3 && split.Is(to, CodepointClass::kNumber)) ++to;
      split.Emit(i, to);
      i = to;
      continue;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t body = chars[i].code_point == ' ' ? i + 1 : i;
    if (split.Is(body, CodepointClass::kOther)) {
      size_t to = split.RunEnd(body, CodepointClass::kOther);
      while (to < end && IsNewline(chars[to].code_point)) ++to;
      split.Emit(i, to);
      i = to;
      continue;
    }
    // chars[i] is whitespace. \s*[\r\n]+: the whitespace run up to its last newline.
    const size_t run = split.RunEnd(i, CodepointClass::kWhitespace);
    size_t last_newline = run;
    for (size_t k = i; k < run; ++k) {
      if (IsNewline(chars[k].code_point)) last_newline = k;
    }
    if (last_newline < run) {
      split.Emit(i, last_newline + 1);
      i = last_newline + 1;
      continue;
    }
    // \s+(?!\S) leaves the run's last character to a following word; a lone one is \s+.
    const size_t stop = (run < end && run - i >= 2) ? run - 1 : run;
    split.Emit(i, stop);
    i = stop;
  }
}

void Gpt2PreTokenizer::SplitRange(const std::vector<Char>& chars, size_t begin, size_t end,
                                  std::vector<TextPiece>* pieces) const {
  const Splitting<std::vector<Char>> split{chars, end, pieces};
  size_t i = begin;
  while (i < end) {
    if (const size_t n = ContractionLength(chars, i, end); n > 0) {
      split.Emit(i, i + n);
      i += n;
      continue;
    }
    // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+", tried in this order.
    const bool space = chars[i].code_point == ' ';
    const size_t body = space ? i + 1 : i;
    bool matched = false;
    for (CodepointClass cls :
         {CodepointClass::kLetter, CodepointClass::kNumber, CodepointClass::kOther}) {
      if (split.Is(body, cls)) {
        const size_t to = split.RunEnd(body, cls);
        split.Emit(i, to);
        i = to;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    // chars[i] is whitespace. "\s+(?!\S)" takes the run but leaves its last
    // character to the next word when one follows; a lone one falls to "\s+".
    const size_t to = split.RunEnd(i, CodepointClass::kWhitespace);
    const size_t stop = (to < end && to - i >= 2) ? to - 1 : to;
    split.Emit(i, stop);
    i = stop;
  }
}

}  // namespace medusa::tokenizer_internal
