// Chat templates: which family a model's Jinja template belongs to (by the markers and
// phrases its variants write), the families by name, and the tokenizer's chat rendering.
// The renderers themselves are in chat_families.cc.

#include "engine/tokenizer/chat_template.h"

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/vocab.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

using tokenizer_internal::AsAbsl;

struct NamedFamily {
  const char* name;
  ChatFamily family;
};
constexpr NamedFamily kFamilies[] = {{"chatml", ChatFamily::kChatMl},   {"llama-2", ChatFamily::kLlama2},
                                     {"vicuna", ChatFamily::kVicuna},   {"llama-3", ChatFamily::kLlama3},
                                     {"mistral", ChatFamily::kMistral}, {"zephyr", ChatFamily::kZephyr},
                                     {"gemma", ChatFamily::kGemma},     {"phi-3", ChatFamily::kPhi3}};

bool Has(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// Whether the template's output starts with {{ bos_token }} (any spacing or whitespace control).
bool StartsWithBos(std::string_view t) {
  const size_t open = t.find_first_not_of(" \t\r\n");
  if (open == std::string_view::npos || t.substr(open, 2) != "{{") return false;
  const size_t close = t.find("}}", open);
  if (close == std::string_view::npos) return false;
  std::string inner(t.substr(open + 2, close - open - 2));
  std::erase_if(inner, [](char c) { return c == ' ' || c == '-' || c == '+'; });
  return inner == "bos_token";
}

// A ChatML template may open with a fixed system turn when the conversation has none, e.g.
// SmolLM2's `{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n
// You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}`.
// The fixed text is the first system turn written whole in one string literal (Qwen2.5 also
// writes `'<|im_start|>system\n' + messages[0]['content']`, which is not it).
std::optional<std::string> DefaultSystemMessage(std::string_view tmpl, bool conditional) {
  if (conditional && !Has(tmpl, "!= 'system'") && !Has(tmpl, "!= \"system\"")) return std::nullopt;
  for (std::string_view opening : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    for (size_t start = tmpl.find(opening); start != std::string_view::npos; start = tmpl.find(opening, start + 1)) {
      const size_t body = start + opening.size();
      const size_t end = tmpl.find("<|im_end|>", body);
      if (end == std::string_view::npos) return std::nullopt;
      const std::string_view text = tmpl.substr(body, end - body);
      if (text.empty() || Has(text, "' ") || Has(text, "'}") || Has(text, "' +") || Has(text, "{{")) continue;
      // Jinja string literals may spell newlines and quotes as escapes.
      return absl::StrReplaceAll(AsAbsl(text), {{"\\n", "\n"}, {"\\'", "'"}, {"\\\"", "\""}});
    }
  }
  return std::nullopt;
}

absl::Status NotRecognized(std::string_view jinja, std::string_view why) {
  const std::string_view head = jinja.substr(0, 120);
  return absl::UnimplementedError(absl::StrCat("chat template not supported (", AsAbsl(why), "): known families are ",
                                               absl::StrJoin(ChatFamilyNames(), ", "),
                                               "; pass --chat-template NAME to use one. The template begins \"",
                                               AsAbsl(head), jinja.size() > head.size() ? "...\"" : "\""));
}

// Tool-calling templates render system prompts and messages in ways the families' renderers
// do not follow.
bool CallsTools(std::string_view t) { return Has(t, "tools") || Has(t, "[AVAILABLE_TOOLS]"); }

}  // namespace

std::vector<std::string> ChatFamilyNames() {
  std::vector<std::string> names;
  for (const NamedFamily& f : kFamilies) names.push_back(f.name);
  return names;
}

absl::StatusOr<ChatFormat> RecognizeChatTemplate(std::string_view t, std::string_view bos, std::string_view eos) {
  if (t.empty()) return absl::UnimplementedError("the model has no chat template; pass --chat-template NAME");
  ChatFormat f;
  f.bos = std::string(bos);
  f.eos = std::string(eos);
  f.leading_bos = StartsWithBos(t);
  if (Has(t, "<|im_start|>")) {
    f.family = ChatFamily::kChatMl;
    f.tool_responses = Has(t, "<tool_response>") && Has(t, "message.tool_calls");
    if (CallsTools(t) && !f.tool_responses) return NotRecognized(t, "a ChatML template with tool calling");
    f.default_system = DefaultSystemMessage(t, /*conditional=*/!f.tool_responses);
  } else if (Has(t, "<<SYS>>") && Has(t, "[INST]")) {
    f.family = ChatFamily::kLlama2;
  } else if (Has(t, "[INST]")) {
    f.family = ChatFamily::kMistral;
    f.mistral_v3 = Has(t, "[AVAILABLE_TOOLS]") && Has(t, "loop.last and system_message is defined");
    if (CallsTools(t) && !f.mistral_v3) return NotRecognized(t, "a Mistral template with tool calling");
    f.mistral_system = Has(t, "system_message");
    f.assistant_eos_space = Has(t, "eos_token + ' '");
  } else if (Has(t, "<|start_header_id|>")) {
    if (Has(t, "Cutting Knowledge Date")) {
      // Llama 3.1's template, rendered without tools. Later ones date the prompt by the clock.
      constexpr std::string_view kDate = "{%- set date_string = \"26 Jul 2024\" %}";
      if (!Has(t, kDate)) return NotRecognized(t, "a Llama 3 template dated by the clock (strftime_now)");
      f.knowledge_date = "26 Jul 2024";
    } else if (CallsTools(t)) {
      return NotRecognized(t, "a Llama 3 template with tool calling");
    }
    f.family = ChatFamily::kLlama3;
    f.leading_bos = Has(t, "bos_token");
    f.generation_prompt_always = !Has(t, "add_generation_prompt");
  } else if (Has(t, "<start_of_turn>")) {
    f.family = ChatFamily::kGemma;
  } else if (Has(t, "<|end|>") && (Has(t, "<|user|>") || Has(t, "'<|' + message['role'] + '|>'"))) {
    f.family = ChatFamily::kPhi3;
    f.any_role = Has(t, "'<|' + message['role'] + '|>'");
    f.user_turn_opens_assistant = !f.any_role && !Has(t, "add_generation_prompt");
    f.eos_without_generation_prompt = Has(t, "eos_token");
    f.skip_empty_system = Has(t, "message['role'] == 'system' and message['content']");
  } else if (Has(t, "<|user|>") && Has(t, "<|assistant|>") && Has(t, "eos_token")) {
    f.family = ChatFamily::kZephyr;
  } else if (Has(t, "A chat between a curious user") && Has(t, "USER: ") && Has(t, "ASSISTANT:")) {
    f.family = ChatFamily::kVicuna;
  } else {
    return NotRecognized(t, "not one of the known families");
  }
  return f;
}

absl::StatusOr<ChatFormat> NamedChatFormat(std::string_view name, std::string_view bos, std::string_view eos) {
  for (const NamedFamily& named : kFamilies) {
    if (name != named.name) continue;
    ChatFormat f;
    f.family = named.family;
    f.bos = std::string(bos);
    f.eos = std::string(eos);
    // Each family's current template: Llama-3 and Gemma open with BOS, Mistral takes a
    // system message, Phi-3 ends a finished conversation with EOS.
    f.leading_bos = named.family == ChatFamily::kLlama3 || named.family == ChatFamily::kGemma;
    f.mistral_system = true;
    f.eos_without_generation_prompt = true;
    return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template '", AsAbsl(name), "' (known: ", absl::StrJoin(ChatFamilyNames(), ", "), ")"));
}

absl::StatusOr<ChatFormat> ChatFormatOf(const Tokenizer& tokenizer) {
  const std::string_view bos = tokenizer.Piece(tokenizer.bos_id());
  const std::string_view eos = tokenizer.Piece(tokenizer.eos_id());
  const std::string& named = tokenizer.chat_template_override();
  return named.empty() ? RecognizeChatTemplate(tokenizer.chat_template(), bos, eos) : NamedChatFormat(named, bos, eos);
}

absl::StatusOr<RenderedChat> RenderChat(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages,
                                        bool add_generation_prompt) {
  ASSIGN_OR_RETURN(const ChatFormat format, ChatFormatOf(tokenizer));
  return RenderChatFormat(format, messages, add_generation_prompt);
}

absl::StatusOr<std::string> ApplyChatTemplate(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages,
                                              bool add_generation_prompt) {
  ASSIGN_OR_RETURN(RenderedChat rendered, RenderChat(tokenizer, messages, add_generation_prompt));
  return std::move(rendered.text);
}

}  // namespace medusa
