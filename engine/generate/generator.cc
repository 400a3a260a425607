#include "engine/generate/generator.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "engine/generate/sequence_decoder.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

// Generate's loop: one sequence per forward pass, its tree every step.
absl::StatusOr<GenerationResult> RunAlone(SequenceDecoder& decoder, Engine& engine) {
  kernels::ForwardBatch batch;
  kernels::ForwardResult forward;
  std::vector<float> head_logits;  // [heads, vocab]
  RETURN_IF_ERROR(decoder.ReservePrompt());
  while (decoder.prefilling()) {
    batch.Clear();
    decoder.AppendPrefill(batch, 0, engine.options().prefill_chunk);
    batch.want_logits = !batch.output_rows.empty();
    batch.want_hidden = batch.want_logits && decoder.medusa();
    RETURN_IF_ERROR(engine.backend().Forward(batch, &forward));
    RETURN_IF_ERROR(decoder.AfterForward(forward, SequenceDecoder::Clock::now()));
  }
  while (!decoder.done()) {
    const auto step_start = SequenceDecoder::Clock::now();
    RETURN_IF_ERROR(decoder.ReserveRoot());
    RETURN_IF_ERROR(decoder.PlanTree(engine.medusa_tree()));
    if (decoder.needs_head_logits()) {
      RETURN_IF_ERROR(engine.backend().MedusaHeadLogits(decoder.hidden(), 1, decoder.planned_tree().num_heads_used(),
                                                        &head_logits));
    }
    RETURN_IF_ERROR(decoder.BuildCandidates(head_logits));
    batch.Clear();
    decoder.AppendStep(batch, 0);
    batch.want_logits = true;
    batch.want_hidden = decoder.medusa();
    RETURN_IF_ERROR(engine.backend().Forward(batch, &forward));
    RETURN_IF_ERROR(decoder.AfterForward(forward, step_start));
  }
  decoder.Release();
  return decoder.TakeResult();
}

}  // namespace

double GenerationResult::step_ms_quantile(double q) const {
  if (step_seconds.empty()) return 0.0;
  std::vector<double> sorted = step_seconds;
  std::sort(sorted.begin(), sorted.end());
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(q * (sorted.size() - 1) + 0.5));
  return 1e3 * sorted[index];
}

std::vector<int32_t> StopTokenIds(const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = tokenizer.stop_ids();
  if (tokenizer.bos_id() >= 0 && std::find(ids.begin(), ids.end(), tokenizer.bos_id()) == ids.end()) {
    ids.push_back(tokenizer.bos_id());
  }
  return ids;
}

absl::Status ValidateRequest(const Engine& engine, const GenerationRequest& request) {
  const ModelConfig& config = engine.config();
  if (request.prompt_ids.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (int32_t id : request.prompt_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token id %d is outside the vocabulary [0, %d)", id, config.vocab_size));
    }
  }
  if (static_cast<int>(request.prompt_ids.size()) >= config.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens; the model's context is %d, which leaves no room to generate",
        request.prompt_ids.size(), config.max_seq_len));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens must be >= 1, got %d", request.max_tokens));
  }
  const AcceptanceOptions& typical = request.acceptance;  // the typical rule's parameters
  if (!(typical.epsilon >= 0 && typical.epsilon <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("typical acceptance epsilon must be in [0, 1], got %g", typical.epsilon));
  }
  if (!(typical.delta >= 0 && typical.delta <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("typical acceptance delta must be in [0, 1], got %g", typical.delta));
  }
  return request.sampling.Validate();
}

absl::StatusOr<GenerationResult> Generate(Engine& engine, const GenerationRequest& request,
                                          const StreamCallback& on_text, const GenerateHooks& hooks) {
  RETURN_IF_ERROR(ValidateRequest(engine, request));
  const MedusaTree* tree = engine.medusa_tree();
  SequenceDecoder::Options options;
  options.medusa = request.use_medusa && tree != nullptr && tree->num_nodes() > 1;
  options.stats_depth = options.medusa ? tree->max_depth() : 0;
  options.on_text = on_text;
  options.hooks = &hooks;
  ASSIGN_OR_RETURN(std::unique_ptr<SequenceDecoder> decoder,
                   SequenceDecoder::Create(engine, request, std::move(options)));
  return RunAlone(*decoder, engine);
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tokenizer,
                                                absl::Span<const ChatMessage> messages) {
  ASSIGN_OR_RETURN(std::string text, ApplyChatTemplate(tokenizer, messages, true));
  // The template writes BOS itself where the model wants one.
  return tokenizer.Encode(text, /*add_bos=*/false, /*parse_special=*/true);
}

absl::StatusOr<std::vector<int32_t>> EncodePrompt(const Tokenizer& tokenizer, std::string_view text,
                                                  bool chat) {
  if (chat) {
    ChatMessage message{"user", std::string(text)};
    return EncodeChat(tokenizer, absl::MakeConstSpan(&message, 1));
  }
  return tokenizer.Encode(text, tokenizer.add_bos_default(), /*parse_special=*/true);
}

}  // namespace medusa
