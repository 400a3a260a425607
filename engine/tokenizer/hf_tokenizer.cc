// Hugging Face `tokenizers` files (tokenizer.json, with tokenizer_config.json and
// chat_template.jinja beside it): the byte-level BPE family (GPT-2's ByteLevel pre-tokenizer,
// optionally after Digits(individual_digits), as SmolLM2 and GPT-2 ship it; Llama 3's Split
// pattern), built on the same BPE as GGUF's "gpt2" vocabularies. Other families
// (SentencePiece-style BPE with byte fallback, other split patterns) are refused by name; a
// tokenizer.model beside the checkpoint serves the SentencePiece ones.

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tokenizer_internal::TokenType;

absl::Status Unsupported(const std::string& path, const std::string& what) {
  return absl::UnimplementedError(absl::StrCat(path, ": ", what,
                                               " is not read yet (byte-level BPE with the ByteLevel pre-tokenizer is; "
                                               "a tokenizer.model beside it serves SentencePiece models)"));
}

absl::StatusOr<json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  json value = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path.string(), " is not valid JSON"));
  return value;
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
  return Unsupported(path, absl::StrCat("the pre-tokenizer ", pre.dump().substr(0, 200)));
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
std::string ChatTemplate(const fs::path& dir, const json& config) {
  std::ifstream jinja(dir / "chat_template.jinja");
  if (jinja) {
    std::stringstream text;
    text << jinja.rdbuf();
    return text.str();
  }
  if (!config.contains("chat_template")) return "";
  const json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const json& named : t) {
      if (named.value("name", "") == "default" && named.contains("template")) return named["template"];
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& dir) {
  const fs::path path = fs::path(dir) / "tokenizer.json";
  const std::string where = path.string();
  ASSIGN_OR_RETURN(const json tok, ReadJsonFile(path));
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": no \"model\" object"));
  }
  const json& model = tok["model"];
  if (model.value("type", "") != "BPE")
    return Unsupported(where, absl::StrCat("a ", model.value("type", "?"), " model"));
  if (model.value("byte_fallback", false)) return Unsupported(where, "BPE with byte fallback (SentencePiece style)");
  if (tok.contains("normalizer") && !tok["normalizer"].is_null()) return Unsupported(where, "a normalizer");
  ASSIGN_OR_RETURN(const Split split, ReadSplit(tok.contains("pre_tokenizer") ? tok["pre_tokenizer"] : json(), where));
  if (!model.contains("vocab") || !model["vocab"].is_object() || !model.contains("merges") ||
      !model["merges"].is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": the BPE model needs a vocab object and a merges list"));
  }

  // Tokens by id: the model's vocabulary, then the added tokens (which may extend it).
  std::vector<std::string> tokens;
  std::vector<TokenType> types;
  auto place = [&](int64_t id, const std::string& text, TokenType type) -> absl::Status {
    if (id < 0 || id > (1 << 24)) return absl::InvalidArgumentError(absl::StrCat(where, ": token id ", id));
    if (static_cast<size_t>(id) >= tokens.size()) {
      tokens.resize(id + 1);
      types.resize(id + 1, TokenType::kUnused);
    }
    tokens[id] = text;
    types[id] = type;
    return absl::OkStatus();
  };
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(where, ": vocab entry '", text, "'"));
    RETURN_IF_ERROR(place(id.get<int64_t>(), text, TokenType::kNormal));
  }
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const json& added : tok["added_tokens"]) {
      if (!added.contains("id") || !added.contains("content")) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": an added token without id or content"));
      }
      RETURN_IF_ERROR(place(added["id"].get<int64_t>(), added["content"].get<std::string>(),
                            added.value("special", false) ? TokenType::kControl : TokenType::kUserDefined));
    }
  }
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (types[id] == TokenType::kUnused) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": no token has id ", id));
    }
  }
  std::vector<std::string> merges;
  merges.reserve(model["merges"].size());
  for (const json& m : model["merges"]) {
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(absl::StrCat(m[0].get<std::string>(), " ", m[1].get<std::string>()));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": merge ", m.dump(), " is not a pair"));
    }
  }

  json config = json::object();
  if (fs::exists(fs::path(dir) / "tokenizer_config.json")) {
    ASSIGN_OR_RETURN(config, ReadJsonFile(fs::path(dir) / "tokenizer_config.json"));
  }
  tokenizer_internal::ByteLevelBpeSettings settings;
  settings.individual_digits = split.individual_digits;
  settings.llama3_split = split.llama3;
  settings.add_bos = config.value("add_bos_token", false);
  settings.chat_template = ChatTemplate(dir, config);
  for (auto [key, id] : {std::pair{"bos_token", &settings.bos_id}, std::pair{"eos_token", &settings.eos_id}}) {
    const std::string text = TokenText(config, key);
    for (size_t i = 0; i < tokens.size() && !text.empty(); ++i) {
      if (tokens[i] == text) *id = static_cast<int32_t>(i);
    }
  }
  return tokenizer_internal::CreateByteLevelBpeTokenizer(std::move(tokens), std::move(types), merges,
                                                         std::move(settings), where);
}

}  // namespace medusa
