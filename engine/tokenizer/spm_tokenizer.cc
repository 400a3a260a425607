#include "engine/tokenizer/spm_tokenizer.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/bpe_merge.h"
#include "engine/tokenizer/unicode.h"
#include "kernels/base/status_macros.h"

namespace medusa::tokenizer_internal {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 "▁"

// Scratch space of one Encode call, reused across its segments.
struct SpmScratch {
  std::string normalized;
  std::vector<MergeSymbol> symbols;
  std::vector<MergeCandidate> heap;
  // SentencePiece re-splits merged pieces of type UNUSED into the two pieces
  // that formed them; it remembers the split of the last candidate it queued.
  absl::flat_hash_map<std::string_view, int32_t> unused_splits;
};

class SpmTokenizer final : public Tokenizer {
 public:
  SpmTokenizer(std::vector<SpmPiece> pieces, SpmSettings settings)
      : pieces_(std::move(pieces)), settings_(std::move(settings)) {}

  absl::Status Init(std::string_view source);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special) const override;
  std::vector<int32_t> EncodeTemplated(std::string_view text, absl::Span<const TextSpan> literal) const override;
  std::string TokenBytes(int32_t id, int32_t previous) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int32_t bos_id() const override { return settings_.bos_id; }
  int32_t eos_id() const override { return settings_.eos_id; }
  std::vector<int32_t> stop_ids() const override { return stop_ids_; }
  std::string_view Piece(int32_t id) const override {
    return InRange(id) ? std::string_view(pieces_[id].piece) : std::string_view();
  }
  bool IsControl(int32_t id) const override {
    return InRange(id) && pieces_[id].type == TokenType::kControl;
  }
  std::string chat_template() const override { return settings_.chat_template; }
  bool add_bos_default() const override { return settings_.add_bos; }

 private:
  bool InRange(int32_t id) const { return id >= 0 && id < vocab_size(); }
  TokenType TypeOf(int32_t id) const { return pieces_[id].type; }
  absl::Status InitMerges(std::string_view source);
  void Normalize(std::string_view text, bool at_text_start, bool continues, std::string* out) const;
  // `continues`: the segment continues text before it (no dummy prefix).
  void EncodeSegment(std::string_view text, bool at_text_start, bool continues, SpmScratch* scratch,
                     std::vector<int32_t>* ids) const;
  // Whether the merge loop may join `left` and `right`, and into what (candidate's fields).
  bool FindMerge(std::string_view normalized, const MergeSymbol& left, const MergeSymbol& right, SpmScratch* scratch,
                 MergeCandidate* c) const;
  void SplitIntoSymbols(std::string_view normalized, std::vector<MergeSymbol>* symbols) const;
  void EmitPiece(std::string_view piece, int32_t id, const SpmScratch& scratch,
                 bool* previous_unknown, std::vector<int32_t>* ids) const;
  int32_t LookUp(std::string_view piece) const;

  std::vector<SpmPiece> pieces_;
  SpmSettings settings_;
  // Pieces the merge loop may produce: NORMAL, USER_DEFINED and UNUSED.
  absl::flat_hash_map<std::string, int32_t> mergeable_;
  // The rest (CONTROL, UNKNOWN, BYTE): found by text only outside merges.
  absl::flat_hash_map<std::string, int32_t> reserved_;
  std::array<int32_t, 256> byte_ids_{};
  SpecialTokenMatcher user_defined_;  // always matched, as SentencePiece does
  SpecialTokenMatcher specials_;      // control/unknown strings, matched on request
  std::vector<std::string> decoded_;  // TokenBytes before the leading-space rule
  std::vector<bool> starts_with_space_symbol_;
  std::vector<int32_t> stop_ids_;
  bool has_unused_ = false;
  struct RankedMerge {
    int32_t rank;
    int32_t merged_id;
  };
  // settings_.merges by the ids of the pair (left << 32 | right).
  absl::flat_hash_map<uint64_t, RankedMerge> merge_ranks_;
};

uint64_t PairKey(int32_t left, int32_t right) {
  return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
}

absl::Status SpmTokenizer::Init(std::string_view source) {
  const int32_t n = vocab_size();
  if (n == 0)
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(source), ": the vocabulary is empty"));
  for (const auto& [name, id] :
       {std::pair{"unk", settings_.unk_id}, std::pair{"bos", settings_.bos_id},
        std::pair{"eos", settings_.eos_id}}) {
    if (id < -1 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s id %d is outside the vocabulary (size %d)", source, name, id, n));
    }
  }
  if (settings_.unk_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(source), ": the vocabulary has no unknown token"));
  }
  byte_ids_.fill(-1);
  decoded_.resize(n);
  starts_with_space_symbol_.assign(n, false);
  for (int32_t id = 0; id < n; ++id) {
    const SpmPiece& p = pieces_[id];
    if (p.piece.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: piece %d is empty", source, id));
    }
    const bool mergeable = p.type == TokenType::kNormal || p.type == TokenType::kUserDefined ||
                           p.type == TokenType::kUnused;
    auto& map = mergeable ? mergeable_ : reserved_;
    if (!map.emplace(p.piece, id).second) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: piece %d (\"%s\") duplicates piece %d",
                                                        source, id, p.piece, map[p.piece]));
    }
    has_unused_ |= p.type == TokenType::kUnused;
    if (p.type == TokenType::kUserDefined) user_defined_.Add(p.piece, id);
    if (p.type == TokenType::kControl || p.type == TokenType::kUnknown) specials_.Add(p.piece, id);
    switch (p.type) {
      case TokenType::kControl:
        break;  // decodes to nothing
      case TokenType::kUnknown:
        decoded_[id] = settings_.unk_surface;
        break;
      case TokenType::kByte: {
        const int value = ParseBytePiece(p.piece);
        if (value < 0) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: byte piece %d is \"%s\", expected the form <0xNN>", source, id, p.piece));
        }
        byte_ids_[value] = id;
        decoded_[id] = std::string(1, static_cast<char>(value));
        break;
      }
      default: {
        starts_with_space_symbol_[id] = p.piece.starts_with(kSpaceSymbol);
        decoded_[id] = absl::StrReplaceAll(p.piece, {{AsAbsl(kSpaceSymbol), " "}});
      }
    }
  }
  RETURN_IF_ERROR(InitMerges(source));
  if (settings_.eos_id >= 0) stop_ids_.push_back(settings_.eos_id);
  for (std::string_view piece : kEndOfTurnPieces) {
    const auto it = reserved_.find(AsAbsl(piece));
    if (it != reserved_.end() && TypeOf(it->second) == TokenType::kControl &&
        it->second != settings_.eos_id) {
      stop_ids_.push_back(it->second);
    }
  }
  return absl::OkStatus();
}

absl::Status SpmTokenizer::InitMerges(std::string_view source) {
  merge_ranks_.reserve(settings_.merges.size());
  for (size_t rank = 0; rank < settings_.merges.size(); ++rank) {
    const auto& [left, right] = settings_.merges[rank];
    const auto l = mergeable_.find(left), r = mergeable_.find(right);
    const auto merged = mergeable_.find(absl::StrCat(left, right));
    if (l == mergeable_.end() || r == mergeable_.end() || merged == mergeable_.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: merge %d (\"%s\" \"%s\") names a piece outside the vocabulary", source, rank,
                          left.substr(0, 64), right.substr(0, 64)));
    }
    // A pair listed twice merges at its first rank, as tokenizers does.
    merge_ranks_.try_emplace(PairKey(l->second, r->second), RankedMerge{static_cast<int32_t>(rank), merged->second});
  }
  return absl::OkStatus();
}

// SentencePiece's normalizer with an empty character map ("identity"): invalid
// UTF-8 bytes become U+FFFD, optional removal of leading, trailing and repeated
// spaces, the dummy prefix, and ' ' escaped as "▁".
void SpmTokenizer::Normalize(std::string_view text, bool at_text_start, bool continues, std::string* out) const {
  out->clear();
  const bool squeeze = settings_.remove_extra_whitespaces;
  const std::string_view space =
      settings_.escape_whitespaces ? kSpaceSymbol : std::string_view(" ");
  size_t pos = 0;
  if (squeeze) {
    while (pos < text.size() && text[pos] == ' ') ++pos;
  }
  if (pos == text.size()) return;
  bool prefix = settings_.add_dummy_prefix && !continues && (at_text_start || !settings_.prefix_only_at_text_start);
  if (settings_.prefix_unless_leading_space && (text[pos] == ' ' || text.substr(pos).starts_with(kSpaceSymbol))) {
    prefix = false;
  }
  if (prefix) out->append(space);
  bool previous_space = squeeze;
  while (pos < text.size()) {
    const unicode::DecodedChar c = unicode::DecodeUtf8(text, pos);
    if (c.code_point == ' ') {
      if (!previous_space) out->append(space);
      previous_space = squeeze;
    } else {
      out->append(c.valid ? text.substr(pos, c.length) : unicode::kReplacement);
      previous_space = false;
    }
    pos += c.length;
  }
  if (squeeze) {
    size_t length = out->size();
    while (std::string_view(out->data(), length).ends_with(space)) length -= space.size();
    out->erase(length);
  }
}

int32_t SpmTokenizer::LookUp(std::string_view piece) const {
  if (auto it = mergeable_.find(AsAbsl(piece)); it != mergeable_.end()) return it->second;
  if (auto it = reserved_.find(AsAbsl(piece)); it != reserved_.end()) return it->second;
  return -1;
}

// One symbol per character, except that user-defined pieces stay whole and frozen.
void SpmTokenizer::SplitIntoSymbols(std::string_view normalized,
                                    std::vector<MergeSymbol>* symbols) const {
  symbols->clear();
  size_t pos = 0;
  while (pos < normalized.size()) {
    MergeSymbol s;
    s.start = static_cast<int32_t>(pos);
    const SpecialTokenMatcher::Match m = user_defined_.empty()
                                             ? SpecialTokenMatcher::Match{}
                                             : user_defined_.MatchAt(normalized, pos);
    if (m.length > 0) {
      s.length = static_cast<int32_t>(m.length);
      s.id = m.id;
      s.frozen = true;
    } else {
      s.length = unicode::CharLength(normalized, pos);
      const auto it = mergeable_.find(AsAbsl(normalized.substr(pos, s.length)));
      s.id = it == mergeable_.end() ? -1 : it->second;
    }
    symbols->push_back(s);
    pos += s.length;
  }
  LinkSymbols(symbols);
}

bool SpmTokenizer::FindMerge(std::string_view normalized, const MergeSymbol& left, const MergeSymbol& right,
                             SpmScratch* scratch, MergeCandidate* c) const {
  if (!merge_ranks_.empty()) {
    if (left.id < 0 || right.id < 0) return false;
    const auto it = merge_ranks_.find(PairKey(left.id, right.id));
    if (it == merge_ranks_.end()) return false;
    c->priority = it->second.rank;
    c->merged_id = it->second.merged_id;
    return true;
  }
  const std::string_view merged = normalized.substr(left.start, c->length);
  const auto it = mergeable_.find(AsAbsl(merged));
  if (it == mergeable_.end()) return false;
  c->priority = -static_cast<double>(pieces_[it->second].score);
  c->merged_id = it->second;
  if (has_unused_ && TypeOf(it->second) == TokenType::kUnused) {
    scratch->unused_splits[merged] = left.length;
  }
  return true;
}

void SpmTokenizer::EncodeSegment(std::string_view text, bool at_text_start, bool continues, SpmScratch* scratch,
                                 std::vector<int32_t>* ids) const {
  Normalize(text, at_text_start, continues, &scratch->normalized);
  const std::string_view normalized = scratch->normalized;
  SplitIntoSymbols(normalized, &scratch->symbols);
  scratch->unused_splits.clear();
  ApplyMerges(&scratch->symbols, &scratch->heap,
              [&](const MergeSymbol& left, const MergeSymbol& right, MergeCandidate* c) {
                return FindMerge(normalized, left, right, scratch, c);
              });
  bool previous_unknown = false;
  const auto& symbols = scratch->symbols;
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    EmitPiece(normalized.substr(symbols[i].start, symbols[i].length), symbols[i].id, *scratch,
              &previous_unknown, ids);
  }
}

void SpmTokenizer::EmitPiece(std::string_view piece, int32_t id, const SpmScratch& scratch,
                             bool* previous_unknown, std::vector<int32_t>* ids) const {
  if (id < 0) id = LookUp(piece);
  if (id >= 0 && TypeOf(id) == TokenType::kUnused) {
    const auto split = scratch.unused_splits.find(piece);
    if (split != scratch.unused_splits.end()) {
      EmitPiece(piece.substr(0, split->second), -1, scratch, previous_unknown, ids);
      EmitPiece(piece.substr(split->second), -1, scratch, previous_unknown, ids);
      return;
    }
  }
  if (id >= 0 && TypeOf(id) != TokenType::kUnknown) {
    ids->push_back(id);
    *previous_unknown = false;
    return;
  }
  if (settings_.byte_fallback) {
    for (unsigned char b : piece) {
      ids->push_back(byte_ids_[b] >= 0 ? byte_ids_[b] : settings_.unk_id);
    }
    *previous_unknown = false;
    return;
  }
  // Without byte fallback SentencePiece folds a run of unknown pieces into one.
  if (!*previous_unknown) ids->push_back(settings_.unk_id);
  *previous_unknown = true;
}

std::vector<int32_t> SpmTokenizer::Encode(std::string_view text, bool add_bos,
                                          bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && settings_.add_bos && settings_.bos_id >= 0) ids.push_back(settings_.bos_id);
  SpmScratch scratch;
  // Every text segment is normalized as a sentence of its own (dummy prefix
  // included), as SentencePiece does when special tokens are placed between
  // separately encoded pieces of text.
  static const SpecialTokenMatcher kNoSpecials;
  SplitAtSpecialTokens(
      text, parse_special ? specials_ : kNoSpecials,
      [&](std::string_view segment, bool continues) {
        EncodeSegment(segment, segment.data() == text.data(), continues, &scratch, &ids);
      },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

std::vector<int32_t> SpmTokenizer::EncodeTemplated(std::string_view text, absl::Span<const TextSpan> literal) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  SpmScratch scratch;
  SplitAtSpecialTokens(
      text, specials_,
      [&](std::string_view segment, bool continues) {
        EncodeSegment(segment, segment.data() == text.data(), continues, &scratch, &ids);
      },
      [&](int32_t id) { ids.push_back(id); }, literal, [this](int32_t id) { return IsControl(id); });
  return ids;
}

std::string SpmTokenizer::TokenBytes(int32_t id, int32_t previous) const {
  if (!InRange(id)) return "";
  const std::string& text = decoded_[id];
  // SentencePiece drops the space of the dummy prefix: the leading "▁" of the
  // first piece of a text, i.e. at the start or right after BOS (or any control).
  const bool at_start = previous < 0 || IsControl(previous);
  if (at_start && starts_with_space_symbol_[id] &&
      (settings_.add_dummy_prefix || settings_.remove_extra_whitespaces)) {
    return text.substr(1);
  }
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(std::vector<SpmPiece> pieces,
                                                              SpmSettings settings,
                                                              std::string_view source) {
  auto tokenizer = std::make_unique<SpmTokenizer>(std::move(pieces), std::move(settings));
  RETURN_IF_ERROR(tokenizer->Init(source));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace medusa::tokenizer_internal
