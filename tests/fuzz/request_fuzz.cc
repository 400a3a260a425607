// Requests from wire bytes, as the server receives them: parsed as a GenerateRequest
// (ParseGenerateRequest) and checked and turned into the engine's request
// (ToGenerationRequest), and parsed as a TokenizeRequest and tokenized (PromptIds), each
// with both real tokenizers (SentencePiece without a chat template, byte-level BPE with
// SmolLM2's ChatML template). A request the server accepts must also pass the engine's
// own checks (ValidateRequest) and respect the limits, and prompt text must give no
// control token (only token_ids and the chat template's own text may).

#include <string_view>

#include "engine/generate/request.h"
#include "fuzz_support.h"
#include "kernels/model/config.h"
#include "server/validation.h"

namespace {

constexpr int kContextLength = 512;

// The limits the server sets for a model of this context and vocabulary.
medusa::server::RequestLimits Limits(const medusa::Tokenizer& tokenizer) {
  medusa::server::RequestLimits limits;
  limits.context_length = kContextLength;
  limits.vocab_size = tokenizer.vocab_size();
  limits.max_prompt_bytes = medusa::server::PromptByteLimit(tokenizer, kContextLength);
  return limits;
}

void Generate(std::string_view wire, const medusa::Tokenizer& tokenizer) {
  auto request = medusa::server::ParseGenerateRequest(wire);
  if (!medusa::fuzz::Accepted(request.status(), "ParseGenerateRequest")) return;
  const medusa::server::RequestLimits limits = Limits(tokenizer);
  auto engine_request = medusa::server::ToGenerationRequest(*request, tokenizer, limits);
  if (!medusa::fuzz::Accepted(engine_request.status(), "ToGenerationRequest")) return;
  medusa::ModelConfig config;
  config.vocab_size = tokenizer.vocab_size();
  config.max_seq_len = kContextLength;
  const absl::Status engine_check = medusa::ValidateRequest(config, *engine_request);
  FUZZ_CHECK(engine_check.ok(), engine_check.message());
  FUZZ_CHECK(static_cast<int>(engine_request->prompt_ids.size()) + engine_request->max_tokens <= kContextLength,
             "prompt and max_tokens past the context");
  FUZZ_CHECK(static_cast<int>(engine_request->stop_strings.size()) <= limits.max_stop_strings, "too many stops");
  if (request->input_case() == medusa::v1::GenerateRequest::kPrompt) {  // text is text: no control token but BOS
    const auto& ids = engine_request->prompt_ids;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i == 0 && ids[i] == tokenizer.bos_id()) continue;
      FUZZ_CHECK(!tokenizer.IsControl(ids[i]), "a control token from prompt text");
    }
  }
  for (const auto& stop : engine_request->stop_strings) {
    FUZZ_CHECK(static_cast<int>(stop.size()) <= limits.max_stop_string_bytes, "a stop string past the limit");
  }
}

void Tokenize(std::string_view wire, const medusa::Tokenizer& tokenizer) {
  auto request = medusa::server::ParseTokenizeRequest(wire);
  if (!request.ok()) return;
  auto ids = medusa::server::PromptIds(*request, tokenizer, Limits(tokenizer));
  if (!medusa::fuzz::Accepted(ids.status(), "PromptIds (Tokenize)")) return;
  for (int32_t id : *ids) FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size(), "an id outside the vocabulary");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view wire(reinterpret_cast<const char*>(data), size);
  for (const medusa::Tokenizer* tokenizer : {&medusa::fuzz::SpmTokenizer(), &medusa::fuzz::BpeTokenizer()}) {
    Generate(wire, *tokenizer);
    Tokenize(wire, *tokenizer);
  }
  return 0;
}
