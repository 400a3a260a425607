#pragma once
// Byte-level BPE (GPT-2 style, e.g. SmolLM2): text is split by the GPT-2
// pre-tokenizer, each piece's bytes are mapped to printable characters, and
// merges apply in rank order.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/vocab.h"

namespace medusa::tokenizer_internal {

struct ByteLevelBpeSettings {
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool add_bos = false;
  // Split every digit off before the GPT-2 regex (see Gpt2PreTokenizer).
  bool individual_digits = false;
  // Llama 3's split pattern instead of GPT-2's (see Gpt2PreTokenizer).
  bool llama3_split = false;
  std::string chat_template;
};

// tokens: the vocabulary in byte-level form ("Ġthe"); types: one per token;
// merges: "left right" in rank order. `source` names the file in errors.
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateByteLevelBpeTokenizer(
    std::vector<std::string> tokens, std::vector<TokenType> types,
    const std::vector<std::string>& merges, ByteLevelBpeSettings settings, std::string_view source);

// GPT-2's reversible byte -> printable code point map (bytes that are printable
// Latin-1 map to themselves, the others to U+0100 and up).
char32_t ByteToCodepoint(uint8_t byte);

}  // namespace medusa::tokenizer_internal
