// Chat templates. Models ship Jinja templates; rather than a Jinja engine we
// recognize the ChatML family (SmolLM2, Qwen, ...) and format it directly.

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/vocab.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

using tokenizer_internal::AsAbsl;

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";

// A ChatML template may open with a fixed system turn when the conversation has
// none, e.g. SmolLM2's
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
//   You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
//   ' }}{% endif %}
// Returns that message's text when the template has one.
std::optional<std::string> DefaultSystemMessage(std::string_view tmpl) {
  const bool conditional = tmpl.find("!= 'system'") != std::string_view::npos ||
                           tmpl.find("!= \"system\"") != std::string_view::npos;
  if (!conditional) return std::nullopt;
  for (std::string_view opening : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    const size_t start = tmpl.find(opening);
    if (start == std::string_view::npos) continue;
    const size_t body = start + opening.size();
    const size_t end = tmpl.find(kImEnd, body);
    if (end == std::string_view::npos) return std::nullopt;
    // Jinja string literals may spell newlines and quotes as escapes.
    return absl::StrReplaceAll(AsAbsl(tmpl.substr(body, end - body)),
                               {{"\\n", "\n"}, {"\\'", "'"}, {"\\\"", "\""}});
  }
  return std::nullopt;
}

// Appends `text` that came from a message (never a control token) and records where it lies.
void AppendLiteral(std::string_view text, RenderedChat* out) {
  const size_t begin = out->text.size();
  absl::StrAppend(&out->text, AsAbsl(text));
  if (!text.empty()) out->literal.push_back({begin, out->text.size()});
}

void AppendTurn(std::string_view role, std::string_view content, RenderedChat* out) {
  absl::StrAppend(&out->text, AsAbsl(kImStart));
  AppendLiteral(role, out);
  absl::StrAppend(&out->text, "\n");
  AppendLiteral(content, out);
  absl::StrAppend(&out->text, AsAbsl(kImEnd), "\n");
}

// The template's own default system turn: its text is the template's, not a user's.
void AppendTemplateTurn(std::string_view role, std::string_view content, RenderedChat* out) {
  absl::StrAppend(&out->text, AsAbsl(kImStart), AsAbsl(role), "\n", AsAbsl(content), AsAbsl(kImEnd), "\n");
}

}  // namespace

absl::StatusOr<RenderedChat> RenderChat(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages,
                                        bool add_generation_prompt) {
  const std::string tmpl = tokenizer.chat_template();
  if (tmpl.empty()) {
    return absl::UnimplementedError(
        "the model has no chat template (no tokenizer.chat_template in its metadata)");
  }
  if (tmpl.find(kImStart) == std::string::npos) {
    return absl::UnimplementedError(absl::StrCat(
        "chat template not supported (only ChatML templates with <|im_start|> are): \"",
        AsAbsl(std::string_view(tmpl).substr(0, 120)), tmpl.size() > 120 ? "...\"" : "\""));
  }
  if (messages.empty()) {
    // As transformers' apply_chat_template: an empty conversation is a caller error.
    return absl::InvalidArgumentError("cannot apply a chat template to an empty conversation");
  }
  RenderedChat out;
  if (messages[0].role != "system") {
    if (std::optional<std::string> system = DefaultSystemMessage(tmpl)) {
      AppendTemplateTurn("system", *system, &out);
    }
  }
  for (const ChatMessage& m : messages) AppendTurn(m.role, m.content, &out);
  if (add_generation_prompt) absl::StrAppend(&out.text, AsAbsl(kImStart), "assistant\n");
  return out;
}

absl::StatusOr<std::string> ApplyChatTemplate(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages,
                                              bool add_generation_prompt) {
  ASSIGN_OR_RETURN(RenderedChat rendered, RenderChat(tokenizer, messages, add_generation_prompt));
  return std::move(rendered.text);
}

}  // namespace medusa
