#pragma once
// Chat templates. Models ship Jinja templates; rather than a Jinja engine, the engine
// recognizes the template families people serve by their signatures and renders each as
// transformers' apply_chat_template renders that family's templates, keeping track of which
// bytes came from messages (they must never become control tokens).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer.h"

namespace medusa {

enum class ChatFamily { kChatMl, kLlama2, kVicuna, kLlama3, kMistral, kZephyr, kGemma, kPhi3 };

// A family and the variant of it a template writes (templates of one family changed over
// the models' revisions), with the model's BOS and EOS token texts.
struct ChatFormat {
  ChatFamily family = ChatFamily::kChatMl;
  std::string bos;  // "" where the model has none
  std::string eos;
  bool leading_bos = false;  // the template writes bos_token first
  // ChatML: the system message written when the conversation has none.
  std::optional<std::string> default_system;
  // Qwen2.5's ChatML (rendered without tools): tool results grouped into one user turn of
  // <tool_response> blocks; roles other than user, system and assistant left out.
  bool tool_responses = false;
  bool generation_prompt_always = false;  // Llama-3's first revision: the assistant header, always
  // Llama 3.1: a system turn always, opening with the knowledge cutoff and this date; tool
  // results (roles tool and ipython) as JSON strings under the ipython header.
  std::string knowledge_date;
  // Mistral: the revision with an optional system message (" [INST] ", the system text before the
  // first user message); else the first ("[INST] ", no system role), `assistant_eos_space` with
  // a space after EOS.
  bool mistral_system = false;
  bool assistant_eos_space = false;
  // Mistral v0.3 (rendered without tools): "[INST] ...[/INST]", the system text in the last
  // message when that is the user's, assistant text trimmed; tool results need call ids.
  bool mistral_v3 = false;
  // Phi-3: EOS closes a conversation rendered without a generation prompt; an empty system
  // message is left out (Phi-3.5); any role is written as <|role|> (Phi-3-small); the first
  // revision opens the assistant's turn after every user turn instead.
  bool eos_without_generation_prompt = false;
  bool skip_empty_system = false;
  bool any_role = false;
  bool user_turn_opens_assistant = false;
};

// The families --chat-template takes: chatml, llama-2, vicuna, llama-3, mistral, zephyr,
// gemma, phi-3.
std::vector<std::string> ChatFamilyNames();

// The family and variant of a model's Jinja template; Unimplemented naming the known families
// where it is none of them (or a variant not rendered, such as tool-calling templates).
absl::StatusOr<ChatFormat> RecognizeChatTemplate(std::string_view jinja, std::string_view bos, std::string_view eos);
// A family's current template by name (--chat-template); InvalidArgument naming the families.
absl::StatusOr<ChatFormat> NamedChatFormat(std::string_view name, std::string_view bos, std::string_view eos);

// The tokenizer's chat format: the family its set_chat_template_override names, else its model's
// template recognized (with its BOS and EOS texts); an error where neither gives one.
absl::StatusOr<ChatFormat> ChatFormatOf(const Tokenizer& tokenizer);

// Renders `messages` as the format's template does. InvalidArgument where the template raises
// (roles that do not alternate, a system message it does not take) or for no messages.
absl::StatusOr<RenderedChat> RenderChatFormat(const ChatFormat& format, absl::Span<const ChatMessage> messages,
                                              bool add_generation_prompt);

}  // namespace medusa
