// Each chat-template family rendered as transformers renders its templates (Jinja with
// trim_blocks and lstrip_blocks), checked against transformers on the real templates in
// tests/fixtures/chat_templates. Message text goes in as literal spans, template text as is.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

using tokenizer_internal::AsAbsl;

constexpr char kAlternate[] = "Conversation roles must alternate user/assistant/user/assistant/...";
constexpr char kAlternateAfterSystem[] =
    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...";
constexpr char kVicunaSystem[] =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.";

// Python's str.isspace, which Jinja's trim and str.strip() use.
bool IsPythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// A piece of rendered text: the template's own, or a message's.
struct Piece {
  std::string text;
  bool literal = false;
};

// Python's strip() of the pieces' concatenation, applied piece by piece.
void Strip(std::vector<Piece>* pieces) {
  for (Piece& p : *pieces) {  // leading
    size_t pos = 0;
    while (pos < p.text.size()) {
      const unicode::DecodedChar c = unicode::DecodeUtf8(p.text, pos);
      if (!c.valid || !IsPythonSpace(c.code_point)) break;
      pos += c.length;
    }
    p.text.erase(0, pos);
    if (!p.text.empty()) break;
  }
  for (auto it = pieces->rbegin(); it != pieces->rend(); ++it) {  // trailing
    size_t end = 0, pos = 0;
    while (pos < it->text.size()) {
      const unicode::DecodedChar c = unicode::DecodeUtf8(it->text, pos);
      pos += c.length;
      if (!c.valid || !IsPythonSpace(c.code_point)) end = pos;
    }
    it->text.erase(end);
    if (!it->text.empty()) break;
  }
}

class ChatWriter {
 public:
  void Template(std::string_view text) { absl::StrAppend(&out_.text, AsAbsl(text)); }
  void Literal(std::string_view text) {
    const size_t begin = out_.text.size();
    absl::StrAppend(&out_.text, AsAbsl(text));
    if (!text.empty()) out_.literal.push_back({begin, out_.text.size()});
  }
  void Write(const std::vector<Piece>& pieces) {
    for (const Piece& p : pieces) p.literal ? Literal(p.text) : Template(p.text);
  }
  void Stripped(std::vector<Piece> pieces) {
    Strip(&pieces);
    Write(pieces);
  }
  void StrippedLiteral(std::string_view text) { Stripped({{std::string(text), true}}); }
  RenderedChat Finish() { return std::move(out_); }

 private:
  RenderedChat out_;
};

bool IsRole(const ChatMessage& m, std::string_view role) { return m.role == role; }
// The check templates make as `(message['role'] == 'user') != (loop.index0 % 2 == 0)`.
bool Alternates(const ChatMessage& m, size_t index) { return IsRole(m, "user") == (index % 2 == 0); }

// A leading system message, and the messages after it.
struct SplitSystem {
  std::optional<std::string_view> system;
  absl::Span<const ChatMessage> rest;
};
SplitSystem SplitLeadingSystem(absl::Span<const ChatMessage> messages) {
  if (IsRole(messages[0], "system")) return {messages[0].content, messages.subspan(1)};
  return {std::nullopt, messages};
}

void WriteChatMlTurn(const ChatMessage& m, ChatWriter* w) {
  w->Template("<|im_start|>");
  w->Literal(m.role);
  w->Template("\n");
  w->Literal(m.content);
  w->Template("<|im_end|>\n");
}

// Qwen2.5's template without tools: consecutive tool results share one user turn.
absl::StatusOr<RenderedChat> RenderQwenChatMl(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  ChatWriter w;
  if (IsRole(messages[0], "system")) {
    WriteChatMlTurn(messages[0], &w);
  } else if (f.default_system) {
    w.Template(absl::StrCat("<|im_start|>system\n", *f.default_system, "<|im_end|>\n"));
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (IsRole(m, "user") || IsRole(m, "assistant") || (IsRole(m, "system") && i > 0)) {
      WriteChatMlTurn(m, &w);
    } else if (IsRole(m, "tool")) {
      if (i == 0 || !IsRole(messages[i - 1], "tool")) w.Template("<|im_start|>user");
      w.Template("\n<tool_response>\n");
      w.Literal(m.content);
      w.Template("\n</tool_response>");
      if (i + 1 == messages.size() || !IsRole(messages[i + 1], "tool")) w.Template("<|im_end|>\n");
    }
  }
  if (agp) w.Template("<|im_start|>assistant\n");
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderChatMl(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  if (f.tool_responses) return RenderQwenChatMl(f, messages, agp);
  ChatWriter w;
  if (f.leading_bos) w.Template(f.bos);
  if (f.default_system && !IsRole(messages[0], "system")) {
    w.Template(absl::StrCat("<|im_start|>system\n", *f.default_system, "<|im_end|>\n"));
  }
  for (const ChatMessage& m : messages) WriteChatMlTurn(m, &w);
  if (agp) w.Template("<|im_start|>assistant\n");
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderLlama2(const ChatFormat& f, absl::Span<const ChatMessage> messages) {
  const SplitSystem split = SplitLeadingSystem(messages);
  ChatWriter w;
  for (size_t i = 0; i < split.rest.size(); ++i) {
    const ChatMessage& m = split.rest[i];
    if (!Alternates(m, i)) return absl::InvalidArgumentError(kAlternate);
    std::vector<Piece> content;
    if (i == 0 && split.system) {
      content = {{"<<SYS>>\n", false}, {std::string(*split.system), true}, {"\n<</SYS>>\n\n", false}};
    }
    content.push_back({m.content, true});
    if (IsRole(m, "user")) {
      w.Template(absl::StrCat(f.bos, "[INST] "));
      w.Stripped(content);
      w.Template(" [/INST]");
    } else if (IsRole(m, "assistant")) {
      w.Template(" ");
      w.Stripped(content);
      w.Template(absl::StrCat(" ", f.eos));
    }
  }
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderVicuna(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  const SplitSystem split = SplitLeadingSystem(messages);
  ChatWriter w;
  w.Template(f.bos);
  split.system ? w.Literal(*split.system) : w.Template(kVicunaSystem);
  w.Template(" ");
  for (size_t i = 0; i < split.rest.size(); ++i) {
    const ChatMessage& m = split.rest[i];
    if (!Alternates(m, i)) return absl::InvalidArgumentError(kAlternate);
    if (IsRole(m, "user")) {
      w.Template("USER: ");
      w.Literal(m.content);
      w.Template(" ");
    } else if (IsRole(m, "assistant")) {
      w.Template("ASSISTANT: ");
      w.Literal(m.content);
      w.Template(f.eos);
    }
  }
  if (agp) w.Template("ASSISTANT:");
  return w.Finish();
}

// Llama 3.1's template without tools: a system turn that always opens with the knowledge
// cutoff and the date; tool results as JSON strings (the template's `content | tojson`).
absl::StatusOr<RenderedChat> RenderLlama31(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  const SplitSystem split = SplitLeadingSystem(messages);
  ChatWriter w;
  w.Template(f.bos);
  w.Template(
      absl::StrCat("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: ",
                   f.knowledge_date, "\n\n"));
  if (split.system) w.StrippedLiteral(*split.system);
  w.Template("<|eot_id|>");
  for (const ChatMessage& m : split.rest) {
    if (IsRole(m, "tool") || IsRole(m, "ipython")) {
      w.Template("<|start_header_id|>ipython<|end_header_id|>\n\n");
      w.Literal(nlohmann::json(m.content).dump(-1, ' ', /*ensure_ascii=*/false));
    } else {
      w.Template("<|start_header_id|>");
      w.Literal(m.role);
      w.Template("<|end_header_id|>\n\n");
      w.StrippedLiteral(m.content);
    }
    w.Template("<|eot_id|>");
  }
  if (agp) w.Template("<|start_header_id|>assistant<|end_header_id|>\n\n");
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderLlama3(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  if (!f.knowledge_date.empty()) return RenderLlama31(f, messages, agp);
  ChatWriter w;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && f.leading_bos) w.Template(f.bos);
    w.Template("<|start_header_id|>");
    w.Literal(messages[i].role);
    w.Template("<|end_header_id|>\n\n");
    w.StrippedLiteral(messages[i].content);
    w.Template("<|eot_id|>");
  }
  if (agp || f.generation_prompt_always) w.Template("<|start_header_id|>assistant<|end_header_id|>\n\n");
  return w.Finish();
}

// Mistral v0.3's template without tools: it checks that user and assistant alternate (tool
// results aside) before writing anything.
absl::StatusOr<RenderedChat> RenderMistralV3(const ChatFormat& f, absl::Span<const ChatMessage> messages) {
  const SplitSystem split = SplitLeadingSystem(messages);
  const auto is_tool = [](const ChatMessage& m) { return IsRole(m, "tool") || IsRole(m, "tool_results"); };
  size_t index = 0;
  for (const ChatMessage& m : split.rest) {
    if (is_tool(m)) continue;
    if (!Alternates(m, index++)) {
      return absl::InvalidArgumentError(kAlternateAfterSystem);
    }
  }
  ChatWriter w;
  w.Template(f.bos);
  for (size_t i = 0; i < split.rest.size(); ++i) {
    const ChatMessage& m = split.rest[i];
    if (IsRole(m, "user")) {
      w.Template("[INST] ");
      if (i + 1 == split.rest.size() && split.system) {
        w.Literal(*split.system);
        w.Template("\n\n");
      }
      w.Literal(m.content);
      w.Template("[/INST]");
    } else if (IsRole(m, "assistant")) {
      w.Template(" ");
      w.StrippedLiteral(m.content);
      w.Template(f.eos);
    } else if (is_tool(m)) {
      return absl::InvalidArgumentError("Tool call IDs should be alphanumeric strings with length 9!");
    } else {
      return absl::InvalidArgumentError(
          "Only user and assistant roles are supported, with the exception of an initial optional system message!");
    }
  }
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderMistral(const ChatFormat& f, absl::Span<const ChatMessage> messages) {
  if (f.mistral_v3) return RenderMistralV3(f, messages);
  const SplitSystem split = f.mistral_system ? SplitLeadingSystem(messages) : SplitSystem{std::nullopt, messages};
  ChatWriter w;
  w.Template(f.bos);
  for (size_t i = 0; i < split.rest.size(); ++i) {
    const ChatMessage& m = split.rest[i];
    if (!Alternates(m, i)) {
      return absl::InvalidArgumentError(f.mistral_system ? kAlternateAfterSystem : kAlternate);
    }
    if (IsRole(m, "user")) {
      w.Template(f.mistral_system ? " [INST] " : "[INST] ");
      if (i == 0 && split.system) {
        w.Literal(*split.system);
        w.Template("\n\n");
      }
      w.Literal(m.content);
      w.Template(" [/INST]");
    } else if (IsRole(m, "assistant")) {
      if (f.mistral_system) w.Template(" ");
      w.Literal(m.content);
      w.Template(f.assistant_eos_space ? absl::StrCat(f.eos, " ") : f.eos);
    } else {
      return absl::InvalidArgumentError(f.mistral_system ? "Only user and assistant roles are supported, with the "
                                                           "exception of an initial optional system message!"
                                                         : "Only user and assistant roles are supported!");
    }
  }
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderZephyr(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  ChatWriter w;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    for (std::string_view role : {"user", "system", "assistant"}) {
      if (!IsRole(m, role)) continue;
      w.Template(absl::StrCat("<|", AsAbsl(role), "|>\n"));
      w.Literal(m.content);
      w.Template(absl::StrCat(f.eos, "\n"));
    }
    if (i + 1 == messages.size() && agp) w.Template("<|assistant|>\n");
  }
  return w.Finish();
}

absl::StatusOr<RenderedChat> RenderGemma(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  ChatWriter w;
  if (f.leading_bos) w.Template(f.bos);
  if (IsRole(messages[0], "system")) return absl::InvalidArgumentError("System role not supported");
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (!Alternates(m, i)) return absl::InvalidArgumentError(kAlternate);
    w.Template("<start_of_turn>");
    IsRole(m, "assistant") ? w.Template("model") : w.Literal(m.role);
    w.Template("\n");
    w.StrippedLiteral(m.content);
    w.Template("<end_of_turn>\n");
  }
  if (agp) w.Template("<start_of_turn>model\n");
  return w.Finish();
}

bool IsKnownRole(std::string_view role) { return role == "system" || role == "user" || role == "assistant"; }

absl::StatusOr<RenderedChat> RenderPhi3(const ChatFormat& f, absl::Span<const ChatMessage> messages, bool agp) {
  ChatWriter w;
  if (f.leading_bos) w.Template(f.bos);
  for (const ChatMessage& m : messages) {
    if (f.any_role) {
      // Known roles name control tokens (<|user|>); any other role is text.
      if (IsKnownRole(m.role)) {
        w.Template(absl::StrCat("<|", m.role, "|>"));
      } else {
        w.Template("<|");
        w.Literal(m.role);
        w.Template("|>");
      }
      w.Template("\n");
      w.Literal(m.content);
      w.Template("<|end|>\n");
    } else if (f.user_turn_opens_assistant) {
      if (IsRole(m, "user")) {
        w.Template("<|user|>\n");
        w.Literal(m.content);
        w.Template("<|end|>\n<|assistant|>\n");
      } else if (IsRole(m, "assistant")) {
        w.Literal(m.content);
        w.Template("<|end|>\n");
      }
    } else if (IsKnownRole(m.role) && !(IsRole(m, "system") && f.skip_empty_system && m.content.empty())) {
      w.Template(absl::StrCat("<|", m.role, "|>\n"));
      w.Literal(m.content);
      w.Template("<|end|>\n");
    }
  }
  if (!f.user_turn_opens_assistant) {
    if (agp) {
      w.Template("<|assistant|>\n");
    } else if (f.eos_without_generation_prompt) {
      w.Template(f.eos);
    }
  }
  return w.Finish();
}

}  // namespace

absl::StatusOr<RenderedChat> RenderChatFormat(const ChatFormat& format, absl::Span<const ChatMessage> messages,
                                              bool add_generation_prompt) {
  if (messages.empty()) {
    // As transformers' apply_chat_template: an empty conversation is a caller error.
    return absl::InvalidArgumentError("cannot apply a chat template to an empty conversation");
  }
  switch (format.family) {
    case ChatFamily::kChatMl:
      return RenderChatMl(format, messages, add_generation_prompt);
    case ChatFamily::kLlama2:
      return RenderLlama2(format, messages);
    case ChatFamily::kVicuna:
      return RenderVicuna(format, messages, add_generation_prompt);
    case ChatFamily::kLlama3:
      return RenderLlama3(format, messages, add_generation_prompt);
    case ChatFamily::kMistral:
      return RenderMistral(format, messages);
    case ChatFamily::kZephyr:
      return RenderZephyr(format, messages, add_generation_prompt);
    case ChatFamily::kGemma:
      return RenderGemma(format, messages, add_generation_prompt);
    case ChatFamily::kPhi3:
      return RenderPhi3(format, messages, add_generation_prompt);
  }
  return absl::InternalError("unknown chat family");
}

}  // namespace medusa
