#pragma once
// One generation request and its result, as every decoding entry point takes and gives
// them (Generate, EngineCore and the Scheduler, self-distillation), with the hooks tests
// and training attach to the decoding loop.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/kv/block_allocator.h"
#include "engine/medusa/acceptance.h"
#include "engine/medusa/candidates.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/model/config.h"

namespace medusa {

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  int max_tokens = 256;
  SamplingParams sampling;
  std::vector<std::string> stop_strings;
  bool ignore_eos = false;  // keep going past EOS (benchmarks, fixed-length comparisons)
  bool use_medusa = true;   // when the engine has heads; false: plain decoding
  AcceptanceOptions acceptance;  // of draft tokens when sampling: the rule (typical or rejection), epsilon, delta
};

// Why generation ended: a stop token or stop string, or the length limit (max_tokens or
// the model's context).
enum class FinishReason { kStop, kLength };
// "stop" or "length" (the CLI's JSON).
std::string_view FinishReasonName(FinishReason reason);

struct GenerationResult {
  int prompt_tokens = 0;
  std::vector<int32_t> token_ids;  // every generated token, a final stop token included
  std::string text;                // their text, without a stop token or stop string
  // Decoding steps: forward passes that produced tokens; the last prefill pass
  // is the first step (it yields the first token), so plain decoding takes one
  // step per token and new_tokens / steps is the acceleration rate.
  int steps = 0;
  double prefill_seconds = 0;  // prompt processing up to the first token
  double decode_seconds = 0;   // after the first token, to the end
  FinishReason finish_reason = FinishReason::kLength;
  // Medusa statistics: draft tokens kept in all, steps that kept the token at each
  // head position (index k: depth k + 1), and how many steps kept each length.
  int accepted_tokens = 0;
  std::vector<int> accepted_per_position;
  std::vector<int> accepted_length_counts;
  // Steps that verified a chain looked up in the context (EngineOptions::lookup_tokens) rather
  // than the heads' tree, and the draft tokens they kept (also counted in accepted_tokens).
  int lookup_steps = 0;
  int lookup_accepted_tokens = 0;
  // Wall time of every decoding step after the first (heads, verification,
  // acceptance and compaction), in order.
  std::vector<double> step_seconds;

  int new_tokens() const { return static_cast<int>(token_ids.size()); }
  double acceleration_rate() const { return steps > 0 ? double(new_tokens()) / steps : 0.0; }
  // Tokens made by decoding passes (all but the first) per second of decoding.
  double tokens_per_second() const {
    return decode_seconds > 0 ? (new_tokens() - 1) / decode_seconds : 0.0;
  }
  double mean_step_ms() const { return steps > 1 ? 1e3 * decode_seconds / (steps - 1) : 0.0; }
  // The q-quantile (0..1) of step_seconds, in milliseconds; 0 without steps.
  double step_ms_quantile(double q) const;
};

// Tokens that end generation: the tokenizer's end-of-sequence and end-of-turn
// tokens, and BOS (a model that starts a new document has finished this one;
// llama2.c models delimit stories with BOS).
std::vector<int32_t> StopTokenIds(const Tokenizer& tokenizer);

// InvalidArgument for an empty prompt, ids outside the vocabulary, a prompt
// that leaves no room in the context, max_tokens < 1 or bad sampling values.
absl::Status ValidateRequest(const ModelConfig& config, const GenerationRequest& request);

// Receives text as it becomes final, with the ids generated since the last call.
using StreamCallback = std::function<void(absl::Span<const int32_t> new_ids, std::string_view new_text)>;

// Lets a caller replace the heads' candidates before each verification (tests use
// it to propose known continuations and exercise long accepted paths). It fills
// builder.mutable_head_topk(h) for every head of the tree, given every token so
// far (prompt and generated, the step's root last).
using DraftOverride = std::function<void(absl::Span<const int32_t> tokens, CandidateBuilder& builder)>;

// Hooks into the decoding loop, for tests and training.
struct GenerateHooks {
  DraftOverride draft_override;
  // Called after every decoding step with the sequence's KV cache (its length
  // counts the slots holding valid K/V).
  std::function<void(const kv::SequenceKv& seq)> after_step;
  // Called for every generated token, in order, with the final-normed hidden state of the
  // position whose logits chose it (self-distillation's training rows).
  std::function<void(absl::Span<const float> hidden, int32_t token)> on_token;
};

}  // namespace medusa
