// `medusa generate`: in-process generation on the local engine.

#include <cmath>
#include <cstdio>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/prompts.h"

namespace medusa::tools {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "medusa: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<GenerationRequest> BuildRequest(const Tokenizer& tokenizer, const PromptSpec& spec) {
  GenerationRequest request;
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, spec.messages.empty()
                                                 ? EncodePrompt(tokenizer, spec.text, absl::GetFlag(FLAGS_chat))
                                                 : EncodeChat(tokenizer, spec.messages));
  request.prompt_ids = std::move(ids);
  request.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  request.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  request.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  request.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  request.sampling.seed = absl::GetFlag(FLAGS_seed);
  request.stop_strings = absl::GetFlag(FLAGS_stop);
  request.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  request.use_medusa = !absl::GetFlag(FLAGS_no_medusa);
  ASSIGN_OR_RETURN(SamplingAcceptance rule, ParseSamplingAcceptance(absl::GetFlag(FLAGS_acceptance)));
  request.acceptance.rule = rule;
  request.acceptance.epsilon = static_cast<float>(absl::GetFlag(FLAGS_typical_epsilon));
  request.acceptance.delta = static_cast<float>(absl::GetFlag(FLAGS_typical_delta));
  return request;
}

nlohmann::json ResultJson(const GenerationResult& r, const Engine& engine, bool medusa) {
  const MedusaTree* tree = medusa ? engine.medusa_tree() : nullptr;
  return {
      {"mode", tree && tree->num_nodes() > 1 ? "medusa" : "plain"},
      {"tree_nodes", tree ? tree->num_nodes() : 1},
      {"accepted_tokens", r.accepted_tokens},
      {"accepted_per_position", r.accepted_per_position},
      {"accepted_length_counts", r.accepted_length_counts},
      {"prompt_tokens", r.prompt_tokens},
      {"new_tokens", r.new_tokens()},
      {"token_ids", r.token_ids},
      {"text", r.text},
      {"steps", r.steps},
      {"acceleration_rate", r.acceleration_rate()},
      {"prefill_seconds", r.prefill_seconds},
      {"prefill_tokens_per_second", r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0.0},
      {"decode_seconds", r.decode_seconds},
      {"tokens_per_second", r.tokens_per_second()},
      {"mean_step_ms", r.mean_step_ms()},
      {"step_ms_p50", r.step_ms_quantile(0.5)},
      {"step_ms_p90", r.step_ms_quantile(0.9)},
      {"finish_reason", FinishReasonName(r.finish_reason)},
  };
}

}  // namespace

int RunGenerate() {
  if (absl::GetFlag(FLAGS_model).empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  if (absl::GetFlag(FLAGS_heads).empty() && !absl::GetFlag(FLAGS_tree).empty()) {
    return Fail(absl::InvalidArgumentError("--tree needs Medusa heads: give --heads PATH"));
  }
  if (absl::StatusOr<SamplingAcceptance> rule = ParseSamplingAcceptance(absl::GetFlag(FLAGS_acceptance));
      !rule.ok()) {
    return Fail(rule.status());  // before the model loads, not after
  }
  absl::StatusOr<std::vector<PromptSpec>> prompts = PromptsFromFlags();
  if (!prompts.ok()) return Fail(prompts.status());

  EngineOptions options;
  options.model_path = absl::GetFlag(FLAGS_model);
  options.tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  options.backend.device = absl::GetFlag(FLAGS_device);
  options.backend.threads = absl::GetFlag(FLAGS_threads);
  options.kv_cache_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_kv_cache_mb)) << 20;
  options.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  options.heads_path = absl::GetFlag(FLAGS_heads);
  if (!absl::GetFlag(FLAGS_tree).empty()) options.tree = absl::GetFlag(FLAGS_tree);
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  if (!engine.ok()) return Fail(engine.status());

  const bool json = absl::GetFlag(FLAGS_json);
  const bool medusa = !absl::GetFlag(FLAGS_no_medusa) && (*engine)->medusa_tree() != nullptr;
  for (const PromptSpec& spec : *prompts) {
    absl::StatusOr<GenerationRequest> request = BuildRequest((*engine)->tokenizer(), spec);
    if (!request.ok()) return Fail(request.status());
    StreamCallback print_text = nullptr;
    if (!json) {
      print_text = [](absl::Span<const int32_t>, std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      };
    }
    absl::StatusOr<GenerationResult> result = Generate(**engine, *request, print_text);
    if (!result.ok()) return Fail(result.status());
    if (json) {
      std::cout << ResultJson(*result, **engine, medusa).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << std::endl;
    } else {
      std::fprintf(stderr,
                   "\n[%d prompt tokens, %d new tokens in %d steps (%.2f tokens/step, %s); prefill "
                   "%.1f tok/s, decode %.1f tok/s; %s]\n",
                   result->prompt_tokens, result->new_tokens(), result->steps,
                   result->acceleration_rate(), medusa ? "medusa" : "plain",
                   result->prefill_seconds > 0 ? result->prompt_tokens / result->prefill_seconds : 0.0,
                   result->tokens_per_second(), std::string(FinishReasonName(result->finish_reason)).c_str());
    }
  }
  return 0;
}

}  // namespace medusa::tools
