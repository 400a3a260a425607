// Hugging Face `tokenizers` files (tokenizer.json, with tokenizer_config.json and
// chat_template.jinja beside it), in the two BPE families Llama-architecture models ship:
// - byte-level BPE (GPT-2's ByteLevel pre-tokenizer, optionally after Digits(individual_digits),
//   as SmolLM2 and GPT-2 ship it; Llama 3's Split pattern), built on the same BPE as GGUF's
//   "gpt2" vocabularies;
// - SentencePiece-style BPE with byte fallback (Llama-2, Vicuna, Mistral): Llama-2's
//   Prepend/Replace normalizer or the Metaspace pre-tokenizer, built on the SentencePiece
//   tokenizer with tokenizer.json's merge ranks.
// Other models, normalizers and split patterns are refused by name.

#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/io/load_guard.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/spm_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tokenizer_internal::TokenType;

absl::Status Unsupported(const std::string& path, const std::string& what) {
  return absl::UnimplementedError(
      absl::StrCat(path, ": ", what,
                   " is not read (byte-level BPE and SentencePiece-style BPE with byte "
                   "fallback are; a tokenizer.model beside it serves SentencePiece models)"));
}

// Bounded and depth-checked (engine/io/json_reader.h).
absl::StatusOr<json> ReadTokenizerJson(const fs::path& path) {
  return ReadJsonFile(path.string(), kMaxTokenizerFileBytes, "tokenizer file");
}

bool IsByteLevelSplit(const json& p) {
  return p.is_object() && p.value("type", "") == "ByteLevel" && p.value("use_regex", true) &&
         !p.value("add_prefix_space", false);
}

// Llama 3's split pattern, as its tokenizer.json writes it (after JSON unescaping).
constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Split {
  bool individual_digits = false;
  bool llama3 = false;
};

// The splits this reader implements: ByteLevel's own regex (alone or after
// Digits(individual_digits)), or Llama 3's Split pattern before a regex-less ByteLevel;
// Unimplemented for anything else.
absl::StatusOr<Split> ReadSplit(const json& pre, const std::string& path) {
  if (IsByteLevelSplit(pre)) return Split{};
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
    const json& steps = pre["pretokenizers"];
    if (steps.size() == 2 && steps[0].value("type", "") == "Digits" && steps[0].value("individual_digits", false) &&
        IsByteLevelSplit(steps[1])) {
      return Split{.individual_digits = true};
    }
    if (steps.size() == 2 && steps[0].value("type", "") == "Split" && steps[0].contains("pattern") &&
        steps[0]["pattern"].value("Regex", "") == kLlama3Pattern && steps[0].value("behavior", "") == "Isolated" &&
        !steps[0].value("invert", false) && steps[1].value("type", "") == "ByteLevel" &&
        !steps[1].value("use_regex", true) && !steps[1].value("add_prefix_space", false)) {
      return Split{.llama3 = true};
    }
  }
  return Unsupported(path, absl::StrCat("the pre-tokenizer ", JsonSnippet(pre)));
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string TokenText(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

// chat_template.jinja (transformers 5), else tokenizer_config.json's chat_template (a string,
// or named templates of which "default" is taken).
absl::StatusOr<std::string> ChatTemplate(const fs::path& dir, const json& config) {
  absl::StatusOr<std::string> jinja =
      ReadFileBounded((dir / "chat_template.jinja").string(), kMaxTokenizerFileBytes, "chat template");
  if (jinja.ok() || !absl::IsNotFound(jinja.status())) return jinja;
  if (!config.contains("chat_template")) return "";
  const json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const json& named : t) {
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string()) {
        return named["template"].get<std::string>();
      }
    }
  }
  return "";
}

// SentencePiece-style BPE as tokenizer.json writes it: how the "▁" dummy prefix is made.
// Either Llama-2's normalizer (Prepend "▁", then Replace " " with "▁"; no pre-tokenizer) or
// the Metaspace pre-tokenizer (replacement "▁", no split) with prepend_scheme "always" or
// "first"; Unimplemented for anything else.
absl::Status ReadSpmPrefix(const json& tok, const std::string& path, tokenizer_internal::SpmSettings* settings) {
  const json normalizer = tok.contains("normalizer") ? tok["normalizer"] : json();
  const json pre = tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : json();
  const std::string space = "\xE2\x96\x81";
  if (normalizer.is_object() && pre.is_null() && normalizer.value("type", "") == "Sequence" &&
      normalizer.contains("normalizers") && normalizer["normalizers"].size() == 2) {
    const json& prepend = normalizer["normalizers"][0];
    const json& replace = normalizer["normalizers"][1];
    if (prepend.value("type", "") == "Prepend" && prepend.value("prepend", "") == space &&
        replace.value("type", "") == "Replace" && replace.contains("pattern") &&
        replace["pattern"].value("String", "") == " " && replace.value("content", "") == space) {
      settings->add_dummy_prefix = true;
      return absl::OkStatus();
    }
  }
  if (normalizer.is_null() && pre.is_object() && pre.value("type", "") == "Metaspace" &&
      pre.value("replacement", "") == space && !pre.value("split", true)) {
    const std::string scheme = pre.value("prepend_scheme", pre.value("add_prefix_space", true) ? "always" : "never");
    if (scheme == "always" || scheme == "first" || scheme == "never") {
      settings->add_dummy_prefix = scheme != "never";
      settings->prefix_unless_leading_space = true;
      settings->prefix_only_at_text_start = scheme == "first";
      return absl::OkStatus();
    }
  }
  return Unsupported(path, absl::StrCat("SentencePiece-style BPE with normalizer ", JsonSnippet(normalizer, 160),
                                        " and pre-tokenizer ", JsonSnippet(pre, 160)));
}

// The ids of tokenizer.json: the model's vocabulary, then the added tokens (which may extend it;
// special ones are control tokens).
struct Vocabulary {
  std::vector<std::string> tokens;
  std::vector<TokenType> types;
};

absl::StatusOr<Vocabulary> ReadVocabulary(const json& tok, const std::string& where) {
  Vocabulary v;
  // Ids must be 0..n-1 for the n entries (checked below), so a larger id is refused before the
  // vocabulary is sized by it: one entry with id 16,000,000 would allocate 16 million tokens.
  const bool has_added = tok.contains("added_tokens") && tok["added_tokens"].is_array();
  const int64_t entries =
      static_cast<int64_t>(tok["model"]["vocab"].size() + (has_added ? tok["added_tokens"].size() : 0));
  auto place = [&](int64_t id, const std::string& text, TokenType type) -> absl::Status {
    if (id < 0 || id >= entries) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": token id ", id, " is outside [0, ", entries,
                                                     ") for its ", entries, " vocabulary entries"));
    }
    if (static_cast<size_t>(id) >= v.tokens.size()) {
      v.tokens.resize(id + 1);
      v.types.resize(id + 1, TokenType::kUnused);
    }
    v.tokens[id] = text;
    v.types[id] = type;
    return absl::OkStatus();
  };
  for (const auto& [text, id] : tok["model"]["vocab"].items()) {
    if (!id.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": vocab entry '", TextSnippet(text), "' has no integer id"));
    }
    RETURN_IF_ERROR(place(id.get<int64_t>(), text, TokenType::kNormal));
  }
  if (has_added) {
    for (const json& added : tok["added_tokens"]) {
      if (!added.is_object() || !added.contains("id") || !added["id"].is_number_integer() ||
          !added.contains("content") || !added["content"].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": an added token without id or content"));
      }
      RETURN_IF_ERROR(place(added["id"].get<int64_t>(), added["content"].get<std::string>(),
                            added.value("special", false) ? TokenType::kControl : TokenType::kUserDefined));
    }
  }
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    if (v.types[id] == TokenType::kUnused) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": no token has id ", id));
    }
  }
  return v;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadMerges(const json& model,
                                                                            const std::string& where) {
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(model["merges"].size());
  for (const json& m : model["merges"]) {
    if (m.is_string()) {
      const std::string pair = m.get<std::string>();
      const size_t space = pair.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": merge \"", pair.substr(0, 64), "\" is not a pair"));
      }
      merges.emplace_back(pair.substr(0, space), pair.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": merge ", JsonSnippet(m, 64), " is not a pair"));
    }
  }
  return merges;
}

int32_t FindToken(const Vocabulary& v, const std::string& text) {
  for (size_t i = 0; i < v.tokens.size() && !text.empty(); ++i) {
    if (v.tokens[i] == text) return static_cast<int32_t>(i);
  }
  return -1;
}

// Whether plain prompts start with BOS: tokenizer_config.json's add_bos_token where it says,
// else whether tokenizer.json's post-processor puts `bos` first (as Llama 3's does).
bool AddBos(const json& config, const json& tok, const std::string& bos) {
  if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) return config["add_bos_token"];
  if (bos.empty() || !tok.contains("post_processor") || !tok["post_processor"].is_object()) return false;
  const json& post = tok["post_processor"];
  const json* single = nullptr;
  if (post.value("type", "") == "TemplateProcessing" && post.contains("single")) single = &post["single"];
  if (post.value("type", "") == "Sequence" && post.contains("processors")) {
    for (const json& p : post["processors"]) {
      if (p.value("type", "") == "TemplateProcessing" && p.contains("single")) single = &p["single"];
    }
  }
  return single != nullptr && single->is_array() && !single->empty() && (*single)[0].contains("SpecialToken") &&
         (*single)[0]["SpecialToken"].value("id", "") == bos;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadByteLevel(const json& tok, Vocabulary vocab,
                                                         std::vector<std::pair<std::string, std::string>> merges,
                                                         tokenizer_internal::ByteLevelBpeSettings settings,
                                                         const std::string& where) {
  if (tok.contains("normalizer") && !tok["normalizer"].is_null()) return Unsupported(where, "a normalizer");
  ASSIGN_OR_RETURN(const Split split, ReadSplit(tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : json(), where));
  settings.individual_digits = split.individual_digits;
  settings.llama3_split = split.llama3;
  std::vector<std::string> joined;
  joined.reserve(merges.size());
  for (const auto& [left, right] : merges) joined.push_back(absl::StrCat(left, " ", right));
  return tokenizer_internal::CreateByteLevelBpeTokenizer(std::move(vocab.tokens), std::move(vocab.types), joined,
                                                         std::move(settings), where);
}

// SentencePiece-style BPE (Llama-2, Vicuna, Mistral): pieces with "▁" for spaces, byte
// fallback to <0xNN> pieces, merges by rank.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceStyle(
    const json& tok, const json& config, Vocabulary vocab, std::vector<std::pair<std::string, std::string>> merges,
    std::string chat_template, const std::string& where) {
  tokenizer_internal::SpmSettings settings;
  settings.chat_template = std::move(chat_template);
  RETURN_IF_ERROR(ReadSpmPrefix(tok, where, &settings));
  settings.merges = std::move(merges);
  const json& model = tok["model"];
  const std::string unk =
      model.contains("unk_token") && model["unk_token"].is_string() ? model["unk_token"].get<std::string>() : "<unk>";
  settings.unk_id = FindToken(vocab, unk);
  if (settings.unk_id < 0) return absl::InvalidArgumentError(absl::StrCat(where, ": no unknown token \"", unk, "\""));
  const std::string bos = TokenText(config, "bos_token"), eos = TokenText(config, "eos_token");
  settings.bos_id = FindToken(vocab, bos);
  settings.eos_id = FindToken(vocab, eos);
  settings.add_bos = AddBos(config, tok, bos);
  std::vector<tokenizer_internal::SpmPiece> pieces(vocab.tokens.size());
  for (size_t id = 0; id < pieces.size(); ++id) {
    pieces[id].piece = std::move(vocab.tokens[id]);
    TokenType type = vocab.types[id];
    if (static_cast<int32_t>(id) == settings.unk_id) {
      type = TokenType::kUnknown;
    } else if (type == TokenType::kNormal && tokenizer_internal::ParseBytePiece(pieces[id].piece) >= 0) {
      type = TokenType::kByte;
    }
    pieces[id].type = type;
  }
  return tokenizer_internal::CreateSpmTokenizer(std::move(pieces), std::move(settings), where);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizerUnguarded(const std::string& dir) {
  const fs::path path = fs::path(dir) / "tokenizer.json";
  const std::string where = path.string();
  ASSIGN_OR_RETURN(const json tok, ReadTokenizerJson(path));
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": no \"model\" object"));
  }
  const json& model = tok["model"];
  if (model.value("type", "") != "BPE")
    return Unsupported(where, absl::StrCat("a ", model.value("type", "?"), " model"));
  if (!model.contains("vocab") || !model["vocab"].is_object() || !model.contains("merges") ||
      !model["merges"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the BPE model needs a vocab object and a merges list"));
  }
  ASSIGN_OR_RETURN(Vocabulary vocab, ReadVocabulary(tok, where));
  ASSIGN_OR_RETURN(auto merges, ReadMerges(model, where));
  json config = json::object();
  if (fs::exists(fs::path(dir) / "tokenizer_config.json")) {
    ASSIGN_OR_RETURN(config, ReadTokenizerJson(fs::path(dir) / "tokenizer_config.json"));
  }
  ASSIGN_OR_RETURN(const std::string chat_template, ChatTemplate(dir, config));
  if (model.value("byte_fallback", false)) {
    return LoadSentencePieceStyle(tok, config, std::move(vocab), std::move(merges), chat_template, where);
  }
  tokenizer_internal::ByteLevelBpeSettings settings;
  settings.chat_template = chat_template;
  const std::string bos = TokenText(config, "bos_token");
  settings.add_bos = AddBos(config, tok, bos);
  settings.bos_id = FindToken(vocab, bos);
  settings.eos_id = FindToken(vocab, TokenText(config, "eos_token"));
  return LoadByteLevel(tok, std::move(vocab), std::move(merges), std::move(settings), where);
}

}  // namespace

// tokenizer.json's parts are read with nlohmann's accessors, which throw on a value of an
// unexpected type: the guard makes that an InvalidArgument.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& dir) {
  return GuardLoad(absl::StrCat("Hugging Face tokenizer in '", dir, "'"),
                   [&] { return LoadHfTokenizerUnguarded(dir); });
}

}  // namespace medusa
