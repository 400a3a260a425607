#pragma once
// Checks medusa.v1 requests field by field and turns them into the engine's
// GenerationRequest. Every failure is InvalidArgument whose message starts with the
// field's name as the proto spells it ("top_p: must be in (0, 1], got 0"), so a
// client can tell which field to fix.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/generate/request.h"
#include "engine/tokenizer/tokenizer.h"
#include "medusa/v1/generator.pb.h"

namespace medusa::server {

// What a request must fit in.
struct RequestLimits {
  int context_length = 0;  // the model's context: prompt + generated tokens
  int vocab_size = 0;
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  int default_max_tokens = 256;  // when max_tokens is unset (capped by the room left)
  int max_chat_messages = 512;
  // Prompt text (or chat contents together) beyond this is refused before tokenizing
  // (PromptByteLimit: more than the context could hold).
  int max_prompt_bytes = 1 << 20;
};

// The roles a chat message may have.
inline constexpr std::string_view kChatRoles[] = {"system", "user", "assistant", "tool"};

// The most prompt bytes worth tokenizing for a model: its context times its longest
// vocabulary string (no token covers more text than that), within [4 KiB, 16 MiB].
int PromptByteLimit(const Tokenizer& tokenizer, int context_length);

// Parses a serialized request. The text fields are first read as bytes and checked
// for UTF-8 (InvalidArgument naming the field and the byte offset), because a proto3
// string with invalid UTF-8 would fail the parser without saying where. InvalidArgument
// also for bytes that are no such message at all.
absl::StatusOr<v1::GenerateRequest> ParseGenerateRequest(std::string_view wire);
absl::StatusOr<v1::TokenizeRequest> ParseTokenizeRequest(std::string_view wire);

// InvalidArgument naming the first field of `message` (or of a message inside it) that
// this server does not know; OK when there is none.
absl::Status CheckNoUnknownFields(const google::protobuf::Message& message);

// OK for valid UTF-8; otherwise InvalidArgument "<field>: invalid UTF-8 at byte N".
absl::Status CheckUtf8(absl::string_view text, absl::string_view field);

// The prompt's token ids as Generate sees them: text with BOS where the model wants
// it, a conversation through the chat template, ids as given (each checked against
// the vocabulary). Checks the input's fields and sizes (the limits' caps, before any
// tokenization), not whether the tokens fit the context.
absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& request,
                                               const Tokenizer& tokenizer, const RequestLimits& limits);
absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::TokenizeRequest& request, const Tokenizer& tokenizer,
                                               const RequestLimits& limits);

// Every check, then the engine's request.
absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const Tokenizer& tokenizer,
                                                      const RequestLimits& limits);

}  // namespace medusa::server
