#pragma once
// Prompts to token ids: plain text, or chat messages through the model's chat template.

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/tokenizer/tokenizer.h"

namespace medusa {

// Tokenizes a prompt (with BOS when the tokenizer wants it) as text: control-token
// markers in it stay characters. `chat` applies the model's chat template to a single
// user message first.
absl::StatusOr<std::vector<int32_t>> EncodePrompt(const Tokenizer& tokenizer, std::string_view text, bool chat);
// The chat template applied to `messages` (with the prompt that starts the model's
// answer), tokenized.
absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages);

}  // namespace medusa
