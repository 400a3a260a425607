// Tokenizers from GGUF metadata (llama.cpp's keys): "llama" vocabularies are
// SentencePiece BPE, "gpt2" ones byte-level BPE.

#include <algorithm>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/io/json_reader.h"
#include "engine/io/load_guard.h"
#include "engine/model/gguf.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/spm_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

using tokenizer_internal::TokenType;

constexpr char kSource[] = "GGUF tokenizer metadata";

// An optional key: its value, the default when absent, an error when malformed.
absl::StatusOr<int64_t> IntOr(const gguf::File& file, std::string_view key, int64_t fallback) {
  if (!file.Has(key)) return fallback;
  return file.GetInt(key);
}

absl::StatusOr<bool> BoolOr(const gguf::File& file, std::string_view key, bool fallback) {
  if (!file.Has(key)) return fallback;
  return file.GetBool(key);
}

absl::StatusOr<std::string> StringOr(const gguf::File& file, std::string_view key,
                                     std::string fallback) {
  if (!file.Has(key)) return fallback;
  return file.GetString(key);
}

absl::StatusOr<int32_t> TokenIdOr(const gguf::File& file, std::string_view key, int32_t fallback,
                                  size_t vocab_size) {
  ASSIGN_OR_RETURN(int64_t id, IntOr(file, key, fallback));
  if (id < -1 || id >= static_cast<int64_t>(vocab_size)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s is %d, outside the vocabulary (size %d)", kSource, key, id, vocab_size));
  }
  return static_cast<int32_t>(id);
}

// tokenizer.ggml.token_type, or all NORMAL when the file has none.
absl::StatusOr<std::vector<TokenType>> ReadTokenTypes(const gguf::File& file, size_t count) {
  std::vector<TokenType> types(count, TokenType::kNormal);
  if (!file.Has("tokenizer.ggml.token_type")) return types;
  ASSIGN_OR_RETURN(std::vector<int64_t> raw, file.GetIntArray("tokenizer.ggml.token_type"));
  if (raw.size() != count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tokenizer.ggml.token_type has %d entries for %d tokens", kSource, raw.size(), count));
  }
  for (size_t i = 0; i < count; ++i) {
    const int64_t t = raw[i];
    if (t < static_cast<int64_t>(TokenType::kNormal) ||
        t > static_cast<int64_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: token %d has unknown type %d", kSource, i, t));
    }
    types[i] = static_cast<TokenType>(t);
  }
  return types;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlamaVocabulary(const gguf::File& file,
                                                               std::vector<std::string> tokens,
                                                               std::vector<TokenType> types,
                                                               std::string chat_template) {
  const size_t n = tokens.size();
  std::vector<double> scores(n, 0.0);
  if (file.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(std::vector<double> s, file.GetFloatArray("tokenizer.ggml.scores"));
    if (s.size() != n) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tokenizer.ggml.scores has %d entries for %d tokens", kSource, s.size(), n));
    }
    scores = std::move(s);
  }
  tokenizer_internal::SpmSettings settings;
  settings.chat_template = std::move(chat_template);
  // Defaults as llama.cpp's for SentencePiece vocabularies.
  ASSIGN_OR_RETURN(settings.unk_id, TokenIdOr(file, "tokenizer.ggml.unknown_token_id", 0, n));
  ASSIGN_OR_RETURN(settings.bos_id, TokenIdOr(file, "tokenizer.ggml.bos_token_id", 1, n));
  ASSIGN_OR_RETURN(settings.eos_id, TokenIdOr(file, "tokenizer.ggml.eos_token_id", 2, n));
  ASSIGN_OR_RETURN(settings.add_bos, BoolOr(file, "tokenizer.ggml.add_bos_token", true));
  ASSIGN_OR_RETURN(settings.add_dummy_prefix, BoolOr(file, "tokenizer.ggml.add_space_prefix", true));
  settings.remove_extra_whitespaces = false;  // GGUF cannot say; llama.cpp never does
  settings.byte_fallback = std::find(types.begin(), types.end(), TokenType::kByte) != types.end();

  std::vector<tokenizer_internal::SpmPiece> pieces(n);
  for (size_t i = 0; i < n; ++i) {
    pieces[i] = {std::move(tokens[i]), static_cast<float>(scores[i]), types[i]};
  }
  return tokenizer_internal::CreateSpmTokenizer(std::move(pieces), std::move(settings), kSource);
}

// tokenizer.ggml.pre values for which Hugging Face's GGUF conversion splits
// text with the GPT-2 regex (it does so for every value it has no rule for; we
// accept only those known to mean GPT-2 style splitting).
bool UsesGpt2Split(std::string_view pre) {
  for (std::string_view known : {"", "default", "gpt2", "gpt-2", "smollm", "starcoder", "refact"}) {
    if (pre == known) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2Vocabulary(const gguf::File& file,
                                                              std::vector<std::string> tokens,
                                                              std::vector<TokenType> types,
                                                              std::string chat_template) {
  const size_t n = tokens.size();
  ASSIGN_OR_RETURN(std::string pre, StringOr(file, "tokenizer.ggml.pre", ""));
  if (!UsesGpt2Split(pre)) {
    return absl::UnimplementedError(
        absl::StrCat(kSource, ": pre-tokenizer tokenizer.ggml.pre = \"", TextSnippet(pre),
                     "\" is not implemented (only GPT-2 style splitting: default, gpt2, smollm, starcoder)"));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> merges, file.GetStringArray("tokenizer.ggml.merges"));
  tokenizer_internal::ByteLevelBpeSettings settings;
  settings.chat_template = std::move(chat_template);
  ASSIGN_OR_RETURN(settings.bos_id, TokenIdOr(file, "tokenizer.ggml.bos_token_id", -1, n));
  ASSIGN_OR_RETURN(settings.eos_id, TokenIdOr(file, "tokenizer.ggml.eos_token_id", -1, n));
  ASSIGN_OR_RETURN(settings.add_bos, BoolOr(file, "tokenizer.ggml.add_bos_token", false));
  // Hugging Face's conversion keeps digit runs together even for "smollm",
  // whose original tokenizer (and llama.cpp) splits off every \p{N} character
  // first; we match the conversion. SmolLM2's vocabulary has no multi-digit
  // tokens, so the two differ only around numbers: the space before a digit
  // ("a  1") and numeric non-digits such as " ½".
  settings.individual_digits = false;
  return tokenizer_internal::CreateByteLevelBpeTokenizer(std::move(tokens), std::move(types), merges,
                                                         std::move(settings), kSource);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizerUnguarded(const gguf::File& file) {
  if (!file.Has("tokenizer.ggml.model")) {
    return absl::InvalidArgumentError(
        absl::StrCat(kSource, ": the file has no tokenizer (tokenizer.ggml.model is missing)"));
  }
  ASSIGN_OR_RETURN(std::string model, file.GetString("tokenizer.ggml.model"));
  if (model != "llama" && model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat(kSource, ": tokenizer.ggml.model \"", TextSnippet(model),
                                                 "\" is not supported (only llama, gpt2)"));
  }
  ASSIGN_OR_RETURN(std::vector<std::string> tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  ASSIGN_OR_RETURN(std::vector<TokenType> types, ReadTokenTypes(file, tokens.size()));
  ASSIGN_OR_RETURN(std::string chat_template, StringOr(file, "tokenizer.chat_template", ""));
  if (model == "llama") {
    return LoadLlamaVocabulary(file, std::move(tokens), std::move(types), std::move(chat_template));
  }
  return LoadGpt2Vocabulary(file, std::move(tokens), std::move(types), std::move(chat_template));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const gguf::File& file) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      GuardLoad(kSource, [&] { return LoadGgufTokenizerUnguarded(file); });
  if (absl::Status intact = file.CheckIntact(); !intact.ok()) return intact;  // read zeros from a truncated file
  return tokenizer;
}

}  // namespace medusa
