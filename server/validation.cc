#include "server/validation.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "engine/tokenizer/unicode.h"
#include "kernels/base/status_macros.h"
#include "medusa/internal/request_text.pb.h"

namespace medusa::server {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status CheckChatText(const internal::ChatMessagesText& chat) {
  for (int i = 0; i < chat.messages_size(); ++i) {
    const std::string prefix = absl::StrFormat("chat.messages[%d].", i);
    RETURN_IF_ERROR(CheckUtf8(chat.messages(i).role(), prefix + "role"));
    RETURN_IF_ERROR(CheckUtf8(chat.messages(i).content(), prefix + "content"));
  }
  return absl::OkStatus();
}

template <typename Message>
absl::StatusOr<Message> ParseAs(std::string_view wire) {
  Message message;
  if (!message.ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return Invalid("request", absl::StrCat("the bytes are not a ", Message::descriptor()->full_name()));
  }
  return message;
}

// The first field (as a path, "chat.messages[0]", "" for the top) of `message` or of a
// message inside it that the parser kept as unknown; nullopt when there is none.
struct UnknownField {
  std::string path;
  int number = 0;
};
std::optional<UnknownField> FindUnknownField(const google::protobuf::Message& message, const std::string& path) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  const google::protobuf::UnknownFieldSet& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) return UnknownField{path, unknown.field(0).number()};
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const google::protobuf::FieldDescriptor* field : fields) {
    if (field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const std::string name = path.empty() ? std::string(field->name()) : absl::StrCat(path, ".", field->name());
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        if (auto found = FindUnknownField(reflection->GetRepeatedMessage(message, field, i),
                                          absl::StrFormat("%s[%d]", name, i))) {
          return found;
        }
      }
    } else if (auto found = FindUnknownField(reflection->GetMessage(message, field), name)) {
      return found;
    }
  }
  return std::nullopt;
}

// A field this server does not know is a request it cannot honour as meant (a newer
// client's option, a typo in a hand-written request): refuse it instead of ignoring it.
template <typename Message>
absl::StatusOr<Message> ParseStrict(std::string_view wire) {
  absl::StatusOr<Message> message = ParseAs<Message>(wire);
  if (!message.ok()) return message;
  RETURN_IF_ERROR(CheckNoUnknownFields(*message));
  return message;
}

// At most `max` bytes of `text` for an error message, cut at a character boundary.
std::string Quote(absl::string_view text, size_t max = 64) {
  if (text.size() <= max) return absl::StrCat("\"", text, "\"");
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat("\"", text.substr(0, cut), "\"... (", text.size(), " bytes)");
}

absl::Status CheckRole(absl::string_view role, absl::string_view field) {
  if (role.empty()) return Invalid(field, "empty (e.g. \"user\")");
  for (std::string_view known : kChatRoles) {
    if (role == absl::string_view(known.data(), known.size())) return absl::OkStatus();
  }
  return Invalid(field, absl::StrCat(Quote(role), " is not a role: use system, user, assistant or tool"));
}

absl::Status CheckPromptBytes(size_t bytes, absl::string_view field, const RequestLimits& limits) {
  if (bytes <= static_cast<size_t>(limits.max_prompt_bytes)) return absl::OkStatus();
  return Invalid(field, absl::StrFormat("%d bytes of text; at most %d are taken (more than the model's context of "
                                        "%d tokens could hold)",
                                        bytes, limits.max_prompt_bytes, limits.context_length));
}

// The conversation's messages, with their number, roles and size checked before anything
// is rendered or tokenized.
absl::StatusOr<std::vector<ChatMessage>> ChatFrom(const v1::ChatMessages& chat, const RequestLimits& limits) {
  if (chat.messages().empty()) return Invalid("chat.messages", "empty: give at least one message");
  if (chat.messages_size() > limits.max_chat_messages) {
    return Invalid("chat.messages", absl::StrFormat("%d messages; at most %d are taken", chat.messages_size(),
                                                    limits.max_chat_messages));
  }
  size_t bytes = 0;
  for (const v1::ChatMessage& m : chat.messages()) bytes += m.content().size() + m.role().size();
  RETURN_IF_ERROR(CheckPromptBytes(bytes, "chat.messages", limits));
  std::vector<ChatMessage> messages;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    const std::string prefix = absl::StrFormat("chat.messages[%d].", i);
    RETURN_IF_ERROR(CheckRole(m.role(), prefix + "role"));
    RETURN_IF_ERROR(CheckUtf8(m.content(), prefix + "content"));
    messages.push_back({m.role(), m.content()});
  }
  return messages;
}

absl::StatusOr<std::vector<int32_t>> EncodeChatInput(const v1::ChatMessages& chat, const Tokenizer& tokenizer,
                                                     const RequestLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<ChatMessage> messages, ChatFrom(chat, limits));
  absl::StatusOr<std::vector<int32_t>> ids = EncodeChat(tokenizer, messages);
  // A model without a (supported) chat template cannot take a conversation: the
  // request, not the server, has to change.
  if (!ids.ok()) return Invalid("chat", ids.status().message());
  return ids;
}

absl::StatusOr<std::vector<int32_t>> EncodeTextInput(const std::string& prompt, const Tokenizer& tokenizer,
                                                     const RequestLimits& limits) {
  if (prompt.empty()) return Invalid("prompt", "empty");
  RETURN_IF_ERROR(CheckPromptBytes(prompt.size(), "prompt", limits));
  RETURN_IF_ERROR(CheckUtf8(prompt, "prompt"));
  return EncodePrompt(tokenizer, prompt, /*chat=*/false);
}

absl::Status CheckIds(const v1::TokenIds& ids, const RequestLimits& limits) {
  const int vocab_size = limits.vocab_size;
  if (ids.ids().empty()) return Invalid("token_ids.ids", "empty");
  if (ids.ids_size() >= limits.context_length) {
    return Invalid("token_ids", absl::StrFormat("%d prompt tokens leave no room in the model's context of %d tokens",
                                                ids.ids_size(), limits.context_length));
  }
  for (int i = 0; i < ids.ids_size(); ++i) {
    const int32_t id = ids.ids(i);
    if (id < 0 || id >= vocab_size) {
      return Invalid(absl::StrFormat("token_ids.ids[%d]", i),
                     absl::StrFormat("%d is outside the vocabulary [0, %d)", id, vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSampling(const v1::GenerateRequest& request) {
  const float temperature = request.temperature();
  if (std::isnan(temperature) || !std::isfinite(temperature) || temperature < 0) {
    return Invalid("temperature", absl::StrFormat("must be a finite number >= 0, got %g", temperature));
  }
  if (request.has_top_p() && !(request.top_p() > 0 && request.top_p() <= 1)) {
    return Invalid("top_p", absl::StrFormat("must be in (0, 1], got %g", request.top_p()));
  }
  if (request.top_k() < 0) {
    return Invalid("top_k", absl::StrFormat("must be >= 0 (0: no limit), got %d", request.top_k()));
  }
  if (request.has_typical_epsilon() &&
      !(request.typical_epsilon() >= 0 && request.typical_epsilon() <= 1)) {
    return Invalid("typical_epsilon", absl::StrFormat("must be in [0, 1], got %g", request.typical_epsilon()));
  }
  if (request.has_typical_delta() && !(request.typical_delta() >= 0 && request.typical_delta() <= 1)) {
    return Invalid("typical_delta", absl::StrFormat("must be in [0, 1], got %g", request.typical_delta()));
  }
  // Proto3 enums are open: a newer client may send a value this server does not know.
  if (!v1::SamplingAcceptance_IsValid(request.acceptance())) {
    return Invalid("acceptance", absl::StrFormat("unknown value %d (0: default, 1: typical, 2: rejection)",
                                                 static_cast<int>(request.acceptance())));
  }
  return absl::OkStatus();
}

absl::Status CheckStops(const v1::GenerateRequest& request, const RequestLimits& limits) {
  if (request.stop_size() > limits.max_stop_strings) {
    return Invalid("stop", absl::StrFormat("%d stop strings; at most %d are allowed", request.stop_size(),
                                           limits.max_stop_strings));
  }
  for (int i = 0; i < request.stop_size(); ++i) {
    const std::string field = absl::StrFormat("stop[%d]", i);
    const std::string& stop = request.stop(i);
    if (stop.empty()) return Invalid(field, "empty");
    if (static_cast<int>(stop.size()) > limits.max_stop_string_bytes) {
      return Invalid(field, absl::StrFormat("%d bytes; at most %d are allowed", stop.size(),
                                            limits.max_stop_string_bytes));
    }
    RETURN_IF_ERROR(CheckUtf8(stop, field));
  }
  return absl::OkStatus();
}

// The input's field name, for messages about the prompt as a whole.
absl::string_view InputField(const v1::GenerateRequest& request) {
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt: return "prompt";
    case v1::GenerateRequest::kChat: return "chat";
    case v1::GenerateRequest::kTokenIds: return "token_ids";
    default: return "input";
  }
}

// max_tokens as given, or the default, within the room the prompt leaves.
absl::StatusOr<int> MaxTokens(const v1::GenerateRequest& request, int prompt_tokens,
                              const RequestLimits& limits) {
  const int room = limits.context_length - prompt_tokens;
  if (!request.has_max_tokens()) return std::min(limits.default_max_tokens, room);
  const int max_tokens = request.max_tokens();
  if (max_tokens <= 0) return Invalid("max_tokens", absl::StrFormat("must be >= 1, got %d", max_tokens));
  if (max_tokens > room) {
    return Invalid("max_tokens", absl::StrFormat(
        "%d is beyond the context: the model's context of %d tokens leaves %d after the %d "
        "prompt tokens", max_tokens, limits.context_length, room, prompt_tokens));
  }
  return max_tokens;
}

}  // namespace

absl::Status CheckNoUnknownFields(const google::protobuf::Message& message) {
  std::optional<UnknownField> unknown = FindUnknownField(message, "");
  if (!unknown) return absl::OkStatus();
  const std::string where = unknown->path.empty() ? std::string("request") : unknown->path;
  return Invalid(where, absl::StrFormat("unknown field number %d (not in this server's %s)", unknown->number,
                                        std::string(message.GetDescriptor()->full_name())));
}

int PromptByteLimit(const Tokenizer& tokenizer, int context_length) {
  size_t longest = 1;
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) longest = std::max(longest, tokenizer.Piece(id).size());
  constexpr int64_t kFloor = 4 << 10, kCeiling = 16 << 20;
  return static_cast<int>(std::clamp(static_cast<int64_t>(longest) * context_length, kFloor, kCeiling));
}

absl::Status CheckUtf8(absl::string_view text, absl::string_view field) {
  for (size_t pos = 0; pos < text.size();) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const unicode::DecodedChar c = unicode::DecodeUtf8(std::string_view(text.data(), text.size()), pos);
    if (!c.valid) return Invalid(field, absl::StrFormat("invalid UTF-8 at byte %d", pos));
    pos += c.length;
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::GenerateRequest> ParseGenerateRequest(std::string_view wire) {
  ASSIGN_OR_RETURN(internal::GenerateRequestText text, ParseAs<internal::GenerateRequestText>(wire));
  RETURN_IF_ERROR(CheckUtf8(text.prompt(), "prompt"));
  RETURN_IF_ERROR(CheckChatText(text.chat()));
  for (int i = 0; i < text.stop_size(); ++i) {
    RETURN_IF_ERROR(CheckUtf8(text.stop(i), absl::StrFormat("stop[%d]", i)));
  }
  return ParseStrict<v1::GenerateRequest>(wire);
}

absl::StatusOr<v1::TokenizeRequest> ParseTokenizeRequest(std::string_view wire) {
  ASSIGN_OR_RETURN(internal::TokenizeRequestText text, ParseAs<internal::TokenizeRequestText>(wire));
  RETURN_IF_ERROR(CheckUtf8(text.prompt(), "prompt"));
  RETURN_IF_ERROR(CheckChatText(text.chat()));
  return ParseStrict<v1::TokenizeRequest>(wire);
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& request,
                                               const Tokenizer& tokenizer, const RequestLimits& limits) {
  switch (request.input_case()) {
    case v1::GenerateRequest::kPrompt:
      return EncodeTextInput(request.prompt(), tokenizer, limits);
    case v1::GenerateRequest::kChat:
      return EncodeChatInput(request.chat(), tokenizer, limits);
    case v1::GenerateRequest::kTokenIds: {
      RETURN_IF_ERROR(CheckIds(request.token_ids(), limits));
      return std::vector<int32_t>(request.token_ids().ids().begin(), request.token_ids().ids().end());
    }
    default:
      return Invalid("input", "no input: set one of prompt, chat or token_ids");
  }
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::TokenizeRequest& request, const Tokenizer& tokenizer,
                                               const RequestLimits& limits) {
  switch (request.input_case()) {
    case v1::TokenizeRequest::kPrompt:
      return EncodeTextInput(request.prompt(), tokenizer, limits);
    case v1::TokenizeRequest::kChat:
      return EncodeChatInput(request.chat(), tokenizer, limits);
    default:
      return Invalid("input", "no input: set one of prompt or chat");
  }
}

absl::StatusOr<GenerationRequest> ToGenerationRequest(const v1::GenerateRequest& request,
                                                      const Tokenizer& tokenizer,
                                                      const RequestLimits& limits) {
  // Cheap field checks first, so a bad request costs no tokenization.
  RETURN_IF_ERROR(CheckSampling(request));
  RETURN_IF_ERROR(CheckStops(request, limits));
  if (request.has_max_tokens() && request.max_tokens() <= 0) {
    return Invalid("max_tokens", absl::StrFormat("must be >= 1, got %d", request.max_tokens()));
  }

  ASSIGN_OR_RETURN(std::vector<int32_t> ids, PromptIds(request, tokenizer, limits));
  const int prompt_tokens = static_cast<int>(ids.size());
  if (prompt_tokens >= limits.context_length) {
    return Invalid(InputField(request),
                   absl::StrFormat("%d prompt tokens leave no room in the model's context of %d tokens",
                                   prompt_tokens, limits.context_length));
  }
  ASSIGN_OR_RETURN(int max_tokens, MaxTokens(request, prompt_tokens, limits));

  GenerationRequest out;
  out.prompt_ids = std::move(ids);
  out.max_tokens = max_tokens;
  out.sampling.temperature = request.temperature();
  out.sampling.top_p = request.has_top_p() ? request.top_p() : 1.0f;
  out.sampling.top_k = request.top_k();
  out.sampling.seed = request.seed();
  out.stop_strings.assign(request.stop().begin(), request.stop().end());
  out.ignore_eos = request.ignore_eos();
  out.use_medusa = !request.has_medusa() || request.medusa();
  if (request.has_typical_epsilon()) out.acceptance.epsilon = request.typical_epsilon();
  if (request.has_typical_delta()) out.acceptance.delta = request.typical_delta();
  out.acceptance.rule = request.acceptance() == v1::SAMPLING_ACCEPTANCE_REJECTION ? SamplingAcceptance::kRejection
                                                                                  : SamplingAcceptance::kTypical;
  return out;
}

}  // namespace medusa::server
