#pragma once
// SentencePiece-style BPE (the Llama-2 family): pieces with scores, merges of
// the adjacent pair whose merged piece scores best, byte fallback. The three
// loaders (.model, llama2.c tokenizer.bin, GGUF "llama") all build one of these.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/vocab.h"

namespace medusa::tokenizer_internal {

struct SpmPiece {
  std::string piece;  // whitespace already escaped as U+2581 ("▁")
  float score = 0;
  TokenType type = TokenType::kNormal;
};

struct SpmSettings {
  // Normalizer (SentencePiece's "identity" rule plus these switches).
  bool add_dummy_prefix = true;
  // tokenizers' Metaspace pre-tokenizer: no dummy prefix where the text already starts with a
  // space, and (prepend_scheme "first") none for text after a special token.
  bool prefix_unless_leading_space = false;
  bool prefix_only_at_text_start = false;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;
  // Model.
  bool byte_fallback = true;
  // tokenizers' BPE (tokenizer.json): merge the adjacent pair that comes first in this list
  // rather than the pair whose merged piece scores best; empty: SentencePiece's scores.
  std::vector<std::pair<std::string, std::string>> merges;
  int32_t unk_id = 0;
  int32_t bos_id = 1;                          // -1: none
  int32_t eos_id = 2;                          // -1: none
  std::string unk_surface = " \xE2\x81\x87 ";  // how <unk> decodes: " ⁇ "
  // Metadata.
  bool add_bos = true;
  std::string chat_template;
};

// Validates the vocabulary (non-empty unique pieces, ids in range) and builds
// the tokenizer. `source` names the file in error messages.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(std::vector<SpmPiece> pieces,
                                                              SpmSettings settings,
                                                              std::string_view source);

}  // namespace medusa::tokenizer_internal
