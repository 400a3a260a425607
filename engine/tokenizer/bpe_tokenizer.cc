#include "engine/tokenizer/bpe_tokenizer.h"

#include <array>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/bpe_merge.h"
#include "engine/tokenizer/pretokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "kernels/base/status_macros.h"

namespace medusa::tokenizer_internal {
namespace {

struct ByteMaps {
  std::array<char32_t, 256> to_codepoint{};
  absl::flat_hash_map<char32_t, uint8_t> to_byte;
};

const ByteMaps& GetByteMaps() {
  static const ByteMaps* maps = [] {
    auto* m = new ByteMaps;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      m->to_codepoint[b] = printable ? static_cast<char32_t>(b) : next++;
      m->to_byte[m->to_codepoint[b]] = static_cast<uint8_t>(b);
    }
    return m;
  }();
  return *maps;
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Merge {
  int32_t rank;
  int32_t merged_id;
};

struct BpeScratch {
  std::vector<TextPiece> pieces;
  std::vector<MergeSymbol> symbols;
  std::vector<MergeCandidate> heap;
};

class ByteLevelBpeTokenizer final : public Tokenizer {
 public:
  ByteLevelBpeTokenizer(std::vector<std::string> tokens, std::vector<TokenType> types, ByteLevelBpeSettings settings)
      : tokens_(std::move(tokens)),
        types_(std::move(types)),
        settings_(std::move(settings)),
        pre_tokenizer_(settings_.individual_digits, settings_.llama3_split ? Gpt2PreTokenizer::Pattern::kLlama3
                                                                           : Gpt2PreTokenizer::Pattern::kGpt2) {}

  absl::Status Init(const std::vector<std::string>& merges, std::string_view source);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special) const override;
  std::vector<int32_t> EncodeTemplated(std::string_view text, absl::Span<const TextSpan> literal) const override;
  std::string TokenBytes(int32_t id, int32_t previous) const override {
    return InRange(id) ? decoded_[id] : std::string();
  }
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  int32_t bos_id() const override { return settings_.bos_id; }
  int32_t eos_id() const override { return settings_.eos_id; }
  std::vector<int32_t> stop_ids() const override { return stop_ids_; }
  std::string_view Piece(int32_t id) const override {
    return InRange(id) ? std::string_view(tokens_[id]) : std::string_view();
  }
  bool IsControl(int32_t id) const override {
    return InRange(id) && types_[id] == TokenType::kControl;
  }
  std::string chat_template() const override { return settings_.chat_template; }
  bool add_bos_default() const override { return settings_.add_bos; }

 private:
  bool InRange(int32_t id) const { return id >= 0 && id < vocab_size(); }
  int32_t FindToken(std::string_view token) const;  // -1 if absent
  absl::Status IndexMerges(const std::vector<std::string>& merges, std::string_view source);
  void EncodeSegment(std::string_view text, BpeScratch* scratch, std::vector<int32_t>* ids) const;
  void EncodeWord(std::string_view word, BpeScratch* scratch, std::vector<int32_t>* ids) const;

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  ByteLevelBpeSettings settings_;
  Gpt2PreTokenizer pre_tokenizer_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<std::string> decoded_;
  SpecialTokenMatcher user_defined_;  // always matched
  SpecialTokenMatcher specials_;      // control and user-defined, matched on request
  std::vector<int32_t> stop_ids_;
};

// The bytes a byte-level token stands for; false if it has a character outside
// the byte map (then it is not a byte-level token).
bool DecodeByteLevel(std::string_view token, std::string* out) {
  const ByteMaps& maps = GetByteMaps();
  out->clear();
  for (size_t pos = 0; pos < token.size();) {
    const unicode::DecodedChar c = unicode::DecodeUtf8(token, pos);
    const auto it = maps.to_byte.find(c.code_point);
    if (!c.valid || it == maps.to_byte.end()) return false;
    out->push_back(static_cast<char>(it->second));
    pos += c.length;
  }
  return true;
}

// The byte-alphabet spelling of arbitrary bytes.
std::string SpellByteLevel(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) unicode::AppendUtf8(GetByteMaps().to_codepoint[b], &out);
  return out;
}

absl::Status ByteLevelBpeTokenizer::Init(const std::vector<std::string>& merges,
                                         std::string_view source) {
  const int32_t n = vocab_size();
  if (n == 0)
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(source), ": the vocabulary is empty"));
  if (static_cast<int32_t>(types_.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %d token types for %d tokens", source, types_.size(), n));
  }
  for (const auto& [name, id] :
       {std::pair{"bos", settings_.bos_id}, std::pair{"eos", settings_.eos_id}}) {
    if (id < -1 || id >= n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s id %d is outside the vocabulary (size %d)", source, name, id, n));
    }
  }
  decoded_.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& token = tokens_[id];
    if (token.empty())
      return absl::InvalidArgumentError(absl::StrFormat("%s: token %d is empty", source, id));
    // A token with characters outside the byte alphabet stands for its own
    // UTF-8 bytes: Hugging Face's conversion respells it in the alphabet.
    const bool byte_level = DecodeByteLevel(token, &decoded_[id]);
    if (!byte_level) decoded_[id] = token;
    // A string listed twice maps to its last id, as in Hugging Face's GGUF
    // conversion (a dict built in id order) and llama.cpp.
    ids_[byte_level ? token : SpellByteLevel(token)] = id;
    // Special tokens are matched in text by their spelling; the conversion
    // skips those outside the alphabet (llama.cpp mislabels).
    if (types_[id] == TokenType::kControl) {
      decoded_[id].clear();  // control tokens decode to nothing
      if (byte_level) specials_.Add(token, id);
    } else if (types_[id] == TokenType::kUserDefined && byte_level) {
      user_defined_.Add(token, id);
      specials_.Add(token, id);
    }
  }
  const ByteMaps& maps = GetByteMaps();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    unicode::AppendUtf8(maps.to_codepoint[b], &symbol);
    const auto it = ids_.find(symbol);
    // A byte without a token is dropped, as Hugging Face's BPE without an
    // unknown token does.
    byte_ids_[b] = it == ids_.end() ? -1 : it->second;
  }
  if (settings_.eos_id >= 0) stop_ids_.push_back(settings_.eos_id);
  for (std::string_view piece : kEndOfTurnPieces) {
    const auto it = ids_.find(AsAbsl(piece));
    if (it != ids_.end() && types_[it->second] == TokenType::kControl &&
        it->second != settings_.eos_id) {
      stop_ids_.push_back(it->second);
    }
  }
  return IndexMerges(merges, source);
}

int32_t ByteLevelBpeTokenizer::FindToken(std::string_view token) const {
  auto it = ids_.find(AsAbsl(token));
  // Merges may name a respelled token (see Init) by its original spelling.
  if (it == ids_.end()) it = ids_.find(SpellByteLevel(token));
  return it == ids_.end() ? -1 : it->second;
}

absl::Status ByteLevelBpeTokenizer::IndexMerges(const std::vector<std::string>& merges,
                                                std::string_view source) {
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string_view merge = merges[rank];
    const size_t space = merge.find(' ', 1);
    if (space == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: merge %d (\"%s\") is not \"left right\"", source, rank, merge));
    }
    const std::string_view left = merge.substr(0, space);
    const std::string_view right = merge.substr(space + 1);
    const int32_t l = FindToken(left);
    const int32_t r = FindToken(right);
    const int32_t m = FindToken(absl::StrCat(AsAbsl(left), AsAbsl(right)));
    if (l < 0 || r < 0 || m < 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: merge %d (\"%s\") uses or makes a token that is not in the vocabulary", source, rank,
          merge));
    }
    // A pair listed twice keeps its first (best) rank.
    merges_.try_emplace(PairKey(l, r), Merge{static_cast<int32_t>(rank), m});
  }
  return absl::OkStatus();
}

void ByteLevelBpeTokenizer::EncodeWord(std::string_view word, BpeScratch* scratch,
                                       std::vector<int32_t>* ids) const {
  auto& symbols = scratch->symbols;
  symbols.clear();
  for (unsigned char b : word) {
    if (byte_ids_[b] < 0) continue;
    MergeSymbol s;
    s.start = static_cast<int32_t>(symbols.size());
    s.length = 1;  // counted in bytes-with-tokens: only equality matters
    s.id = byte_ids_[b];
    symbols.push_back(s);
  }
  if (symbols.empty()) return;
  LinkSymbols(&symbols);
  ApplyMerges(&symbols, &scratch->heap,
              [&](const MergeSymbol& left, const MergeSymbol& right, MergeCandidate* c) {
                const auto it = merges_.find(PairKey(left.id, right.id));
                if (it == merges_.end()) return false;
                c->priority = it->second.rank;
                c->merged_id = it->second.merged_id;
                return true;
              });
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

void ByteLevelBpeTokenizer::EncodeSegment(std::string_view text, BpeScratch* scratch,
                                          std::vector<int32_t>* ids) const {
  pre_tokenizer_.Split(text, &scratch->pieces);
  for (const TextPiece& piece : scratch->pieces) {
    EncodeWord(text.substr(piece.start, piece.length), scratch, ids);
  }
}

std::vector<int32_t> ByteLevelBpeTokenizer::Encode(std::string_view text, bool add_bos,
                                                   bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && settings_.add_bos && settings_.bos_id >= 0) ids.push_back(settings_.bos_id);
  BpeScratch scratch;
  SplitAtSpecialTokens(
      text, parse_special ? specials_ : user_defined_,
      [&](std::string_view segment, bool) { EncodeSegment(segment, &scratch, &ids); },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

std::vector<int32_t> ByteLevelBpeTokenizer::EncodeTemplated(std::string_view text,
                                                           absl::Span<const TextSpan> literal) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  BpeScratch scratch;
  SplitAtSpecialTokens(
      text, specials_, [&](std::string_view segment, bool) { EncodeSegment(segment, &scratch, &ids); },
      [&](int32_t id) { ids.push_back(id); }, literal, [this](int32_t id) { return IsControl(id); });
  return ids;
}

}  // namespace

char32_t ByteToCodepoint(uint8_t byte) { return GetByteMaps().to_codepoint[byte]; }

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateByteLevelBpeTokenizer(
    std::vector<std::string> tokens, std::vector<TokenType> types,
    const std::vector<std::string>& merges, ByteLevelBpeSettings settings,
    std::string_view source) {
  auto tokenizer = std::make_unique<ByteLevelBpeTokenizer>(std::move(tokens), std::move(types),
                                                           std::move(settings));
  RETURN_IF_ERROR(tokenizer->Init(merges, source));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace medusa::tokenizer_internal
