#include "engine/tokenizer/vocab.h"

#include <algorithm>

namespace medusa::tokenizer_internal {

void SpecialTokenMatcher::Add(std::string_view text, int32_t id) {
  if (text.empty()) return;
  // A multimap inserts an equal key after those already there.
  by_first_byte_[static_cast<unsigned char>(text[0])].emplace(text.size(), Entry{std::string(text), id});
  ++count_;
}

SpecialTokenMatcher::Match SpecialTokenMatcher::MatchAt(std::string_view text, size_t pos) const {
  const auto& bucket = by_first_byte_[static_cast<unsigned char>(text[pos])];
  const std::string_view rest = text.substr(pos);
  for (const auto& [length, e] : bucket) {
    if (rest.substr(0, length) == e.text) return {pos, length, e.id};
  }
  return {pos, 0, -1};
}

SpecialTokenMatcher::Match SpecialTokenMatcher::FindNext(std::string_view text, size_t from) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (by_first_byte_[static_cast<unsigned char>(text[pos])].empty()) continue;
    const Match m = MatchAt(text, pos);
    if (m.length > 0) return m;
  }
  return {std::string_view::npos, 0, -1};
}

int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]);
  const int lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace medusa::tokenizer_internal
