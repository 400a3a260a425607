#include "engine/tokenizer/unicode.h"

#include <algorithm>
#include <iterator>

namespace medusa::unicode {
namespace {

struct ClassRange {
  char32_t first;
  char32_t last;
  CodepointClass cls;
};

constexpr ClassRange kClassRanges[] = {
#include "engine/tokenizer/unicode_tables.inc"
};

// How far a UTF-8 sequence starting at text[pos] is well formed. `needed` is the
// full length the lead byte announces (0 for a byte that cannot lead); `valid`
// is how many bytes from pos agree with the rules (Unicode table 3-7).
struct SequenceCheck {
  int needed;
  int valid;
};

SequenceCheck CheckSequence(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return {1, 1};
  int needed = 0;
  unsigned char second_lo = 0x80, second_hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    needed = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    needed = 3;
    if (lead == 0xE0) second_lo = 0xA0;  // no overlong forms
    if (lead == 0xED) second_hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    needed = 4;
    if (lead == 0xF0) second_lo = 0x90;  // no overlong forms
    if (lead == 0xF4) second_hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return {0, 0};
  }
  int valid = 1;
  for (int i = 1; i < needed && pos + i < text.size(); ++i) {
    const unsigned char b = byte(pos + i);
    const unsigned char lo = i == 1 ? second_lo : 0x80;
    const unsigned char hi = i == 1 ? second_hi : 0xBF;
    if (b < lo || b > hi) break;
    ++valid;
  }
  return {needed, valid};
}

}  // namespace

DecodedChar DecodeUtf8(std::string_view text, size_t pos) {
  const SequenceCheck check = CheckSequence(text, pos);
  if (check.needed == 0 || check.valid < check.needed) return {0xFFFD, 1, false};
  const auto byte = [&](int i) {
    return static_cast<char32_t>(static_cast<unsigned char>(text[pos + i]));
  };
  switch (check.needed) {
    case 1:
      return {byte(0), 1, true};
    case 2:
      return {((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F), 2, true};
    case 3:
      return {((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F), 3, true};
    default:
      return {((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) |
                  (byte(3) & 0x3F),
              4, true};
  }
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

CodepointClass ClassOf(char32_t cp) {
  // ASCII is most of the text: answer it without a search.
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CodepointClass::kLetter;
    if (cp >= '0' && cp <= '9') return CodepointClass::kNumber;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CodepointClass::kWhitespace;
    return CodepointClass::kOther;
  }
  const auto* end = std::end(kClassRanges);
  const auto* it = std::upper_bound(std::begin(kClassRanges), end, cp,
                                    [](char32_t c, const ClassRange& r) { return c < r.first; });
  if (it == std::begin(kClassRanges)) return CodepointClass::kOther;
  --it;
  return cp <= it->last ? it->cls : CodepointClass::kOther;
}

size_t AppendValidUtf8(std::string_view bytes, bool final, std::string* out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const SequenceCheck check = CheckSequence(bytes, pos);
    if (check.needed == 0) {  // a byte that cannot start a character
      out->append(kReplacement);
      pos += 1;
    } else if (check.valid == check.needed) {
      out->append(bytes.substr(pos, check.needed));
      pos += check.needed;
    } else if (pos + check.valid == bytes.size() && !final) {
      break;  // may still be completed by the next bytes
    } else {  // the maximal invalid subpart becomes one U+FFFD
      out->append(kReplacement);
      pos += check.valid;
    }
  }
  return pos;
}

}  // namespace medusa::unicode
