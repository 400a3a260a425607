#include "engine/tokenizer/prompt_encoding.h"

#include <string>

#include "kernels/base/status_macros.h"

namespace medusa {

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages) {
  ASSIGN_OR_RETURN(const RenderedChat chat, RenderChat(tokenizer, messages, true));
  // The template writes BOS itself where the model wants one; only its own markers become
  // control tokens, never what a message says.
  return tokenizer.EncodeTemplated(chat.text, chat.literal);
}

absl::StatusOr<std::vector<int32_t>> EncodePrompt(const Tokenizer& tokenizer, std::string_view text, bool chat) {
  if (chat) {
    ChatMessage message{"user", std::string(text)};
    return EncodeChat(tokenizer, absl::MakeConstSpan(&message, 1));
  }
  // Prompt text is text: "<|im_start|>" in it is characters, not the control token. Control
  // tokens come only from a chat template's own text or from ids given as ids.
  return tokenizer.Encode(text, tokenizer.add_bos_default(), /*parse_special=*/false);
}

}  // namespace medusa
