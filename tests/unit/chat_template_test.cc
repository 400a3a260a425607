// Chat templates against transformers: each family's real templates (tests/fixtures/chat_templates,
// rendered by tests/reference/make_chat_template_fixtures.py) must be recognized as their family
// and render to exactly transformers' text, raise where the template raises, and, where a
// tokenizer of the family is here, encode to transformers' ids with message text kept from
// becoming control tokens.

#include "engine/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

using Ids = std::vector<int32_t>;
using nlohmann::json;

std::string SourcePath(const std::string& relative) { return std::string(MEDUSA_SOURCE_DIR) + "/" + relative; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const json& Fixture() {
  static const json fixture = json::parse(ReadFile(SourcePath("tests/fixtures/chat_templates.json")));
  return fixture;
}

std::string Template(const std::string& name) {
  return ReadFile(SourcePath("tests/fixtures/chat_templates/" + name + ".jinja"));
}

std::vector<ChatMessage> Messages(const json& c) {
  std::vector<ChatMessage> messages;
  for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
  return messages;
}

std::string FamilyName(ChatFamily family) { return ChatFamilyNames()[static_cast<int>(family)]; }

// The tokenizers the fixture's ids come from: Llama-2's tokenizer.json, SmolLM2's and Llama 3.2's.
const Tokenizer& FixtureTokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  auto& tokenizer = loaded[name];
  if (tokenizer == nullptr) {
    const std::string dir = name == "llama2"   ? std::string(MEDUSA_BINARY_DIR) + "/fixtures/llama2_tokenizer_json"
                            : name == "llama3" ? SourcePath("models/llama3-tokenizer")
                                               : SourcePath("tests/fixtures/hf/smollm2_tokenizer");
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = LoadHfTokenizer(dir);
    EXPECT_TRUE(t.ok()) << t.status();
    tokenizer = std::move(*t);
  }
  return *tokenizer;
}

// Renders every case of a template's fixture with `format`; returns how many were checked.
int ExpectRendersAsTransformers(const ChatFormat& format, const json& entry) {
  int checked = 0;
  for (const json& c : entry["cases"]) {
    const std::vector<ChatMessage> messages = Messages(c);
    SCOPED_TRACE(c.dump().substr(0, 300));
    absl::StatusOr<RenderedChat> rendered = RenderChatFormat(format, messages, c["add_generation_prompt"]);
    if (c.contains("error")) {
      EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument) << rendered.status();
      if (!rendered.ok()) {
        EXPECT_NE(c["error"].get<std::string>().find(std::string(rendered.status().message())), std::string::npos)
            << "transformers: " << c["error"] << ", here: " << rendered.status();
      }
      ++checked;
      continue;
    }
    EXPECT_TRUE(rendered.ok()) << rendered.status();
    if (!rendered.ok()) continue;
    EXPECT_EQ(rendered->text, c["text"].get<std::string>());
    if (c.contains("ids")) {
      const Tokenizer& tokenizer = FixtureTokenizer(entry["tokenizer"]);
      EXPECT_EQ(tokenizer.EncodeTemplated(rendered->text, rendered->literal), c["ids"].get<Ids>());
    }
    ++checked;
  }
  return checked;
}

TEST(ChatTemplate, RealTemplatesRenderAsTransformers) {
  int templates = 0;
  std::map<std::string, int> per_family;
  for (const auto& [name, entry] : Fixture()["templates"].items()) {
    SCOPED_TRACE(name);
    absl::StatusOr<ChatFormat> format =
        RecognizeChatTemplate(Template(name), entry["bos"].get<std::string>(), entry["eos"].get<std::string>());
    ASSERT_TRUE(format.ok()) << format.status();
    EXPECT_EQ(FamilyName(format->family), entry["family"].get<std::string>());
    EXPECT_EQ(ExpectRendersAsTransformers(*format, entry), 24);
    ++templates;
    ++per_family[entry["family"]];
  }
  EXPECT_EQ(templates, 22);
  EXPECT_EQ(per_family.size(), ChatFamilyNames().size()) << "every family has a real template";
}

TEST(ChatTemplate, MessageTextNeverBecomesAControlToken) {
  // The injection conversation: a user message full of other turns' markers. With literal
  // spans the ids are transformers' with sanitize_control_tokens; without, the markers would
  // become control tokens.
  int checked = 0;
  for (const auto& [name, entry] : Fixture()["templates"].items()) {
    if (entry["tokenizer"].is_null()) continue;
    const Tokenizer& tokenizer = FixtureTokenizer(entry["tokenizer"]);
    const auto format =
        RecognizeChatTemplate(Template(name), entry["bos"].get<std::string>(), entry["eos"].get<std::string>());
    ASSERT_TRUE(format.ok());
    for (const json& c : entry["cases"]) {
      if (!c.contains("ids") || c["messages"][0]["content"].get<std::string>().find("Obey me") == std::string::npos) {
        continue;
      }
      const auto rendered = RenderChatFormat(*format, Messages(c), c["add_generation_prompt"]);
      ASSERT_TRUE(rendered.ok()) << rendered.status();
      const Ids safe = tokenizer.EncodeTemplated(rendered->text, rendered->literal);
      const Ids unsafe = tokenizer.Encode(rendered->text, false, /*parse_special=*/true);
      EXPECT_EQ(safe, c["ids"].get<Ids>()) << name;
      EXPECT_NE(safe, unsafe) << name << ": the markers in the message would have been control tokens";
      ++checked;
    }
  }
  EXPECT_GE(checked, 14);
}

TEST(ChatTemplate, UnsupportedTemplatesAreClearErrors) {
  for (const json& name : Fixture()["unsupported"]) {
    const absl::Status s = RecognizeChatTemplate(Template(name), "<s>", "</s>").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << name << ": " << s;
    for (const std::string& family : ChatFamilyNames()) {
      EXPECT_NE(s.message().find(family), std::string::npos) << name << ": " << s;
    }
    EXPECT_NE(s.message().find("--chat-template"), std::string::npos) << s;
  }
  EXPECT_EQ(RecognizeChatTemplate("{{ messages }}", "", "").status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(RecognizeChatTemplate("", "", "").status().code(), absl::StatusCode::kUnimplemented);
}

TEST(ChatTemplate, NamedFamiliesRenderTheirCurrentTemplate) {
  for (const auto& [family, template_name] : Fixture()["named"].items()) {
    SCOPED_TRACE(family);
    const json& entry = Fixture()["templates"][template_name.get<std::string>()];
    absl::StatusOr<ChatFormat> format =
        NamedChatFormat(family, entry["bos"].get<std::string>(), entry["eos"].get<std::string>());
    ASSERT_TRUE(format.ok()) << format.status();
    EXPECT_EQ(ExpectRendersAsTransformers(*format, entry), 24);
  }
  const absl::Status unknown = NamedChatFormat("alpaca", "", "").status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.message().find("llama-2"), std::string::npos) << unknown;
}

TEST(ChatTemplate, TokenizerOverrideReplacesTheModelsTemplate) {
  // SmolLM2's tokenizer has a ChatML template; told to use Llama-2's, it renders that family
  // with its own BOS and EOS texts.
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadHfTokenizer(SourcePath("tests/fixtures/hf/smollm2_tokenizer"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<ChatMessage> chat = {{"user", "Hi"}};
  EXPECT_NE(ApplyChatTemplate(**tokenizer, chat)->find("<|im_start|>user"), std::string::npos);
  (*tokenizer)->set_chat_template_override("llama-2");
  const std::string bos((*tokenizer)->Piece((*tokenizer)->bos_id()));
  EXPECT_EQ(*ApplyChatTemplate(**tokenizer, chat), bos + "[INST] Hi [/INST]");
}

}  // namespace
}  // namespace medusa
