// `medusa generate`: in-process generation on the local engine.

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_format.h"
#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/prompts.h"

namespace medusa::tools {
namespace {

absl::StatusOr<GenerationRequest> BuildRequest(const Tokenizer& tokenizer, const PromptSpec& spec, bool chat,
                                               const RequestFlags& flags) {
  GenerationRequest request;
  ASSIGN_OR_RETURN(request.prompt_ids, spec.messages.empty() ? EncodePrompt(tokenizer, spec.text, chat)
                                                             : EncodeChat(tokenizer, spec.messages));
  request.max_tokens = flags.max_tokens;
  request.sampling.temperature = static_cast<float>(flags.temperature);
  request.sampling.top_p = static_cast<float>(flags.top_p);
  request.sampling.top_k = flags.top_k;
  request.sampling.seed = flags.seed;
  request.stop_strings = flags.stop;
  request.ignore_eos = flags.ignore_eos;
  request.use_medusa = !flags.no_medusa;
  ASSIGN_OR_RETURN(request.acceptance.rule, ParseSamplingAcceptance(flags.acceptance));
  request.acceptance.epsilon = static_cast<float>(flags.typical_epsilon);
  request.acceptance.delta = static_cast<float>(flags.typical_delta);
  return request;
}

nlohmann::json ResultJson(const GenerationResult& r, const Engine& engine, bool use_medusa) {
  const MedusaTree* tree = use_medusa ? engine.medusa_tree() : nullptr;
  // With dynamic trees, the nodes verified per step (the budget), not the envelope's.
  const int budget = engine.dynamic_envelope() != nullptr && tree ? tree->num_nodes() - 1 : engine.tree_budget();
  const int nodes = !tree ? 1 : budget > 0 ? std::min(budget + 1, tree->num_nodes()) : tree->num_nodes();
  return {
      {"mode", nodes > 1 ? "medusa" : "plain"},
      {"tree_nodes", nodes},
      {"tree_budget", tree ? budget : 0},
      {"accepted_tokens", r.accepted_tokens},
      {"accepted_per_position", r.accepted_per_position},
      {"accepted_length_counts", r.accepted_length_counts},
      {"lookup_steps", r.lookup_steps},
      {"lookup_accepted_tokens", r.lookup_accepted_tokens},
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

void PrintSummary(const GenerationResult& r, bool use_medusa) {
  std::fprintf(stderr,
               "\n[%d prompt tokens, %d new tokens in %d steps (%.2f tokens/step, %s); prefill "
               "%.1f tok/s, decode %.1f tok/s; %s]\n",
               r.prompt_tokens, r.new_tokens(), r.steps, r.acceleration_rate(), use_medusa ? "medusa" : "plain",
               r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0.0, r.tokens_per_second(),
               std::string(FinishReasonName(r.finish_reason)).c_str());
}

}  // namespace

int RunGenerate(const GenerateCommand& command) {
  absl::StatusOr<std::vector<PromptSpec>> prompts = ReadPrompts(command.prompts);
  if (!prompts.ok()) return Fail(prompts.status());
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(command.engine);
  if (!engine.ok()) return Fail(engine.status());

  const bool use_medusa = !command.request.no_medusa && (*engine)->medusa_tree() != nullptr;
  StreamCallback print_text = nullptr;
  if (!command.json) {
    print_text = [](absl::Span<const int32_t>, std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  }
  for (const PromptSpec& spec : *prompts) {
    absl::StatusOr<GenerationRequest> request =
        BuildRequest((*engine)->tokenizer(), spec, command.prompts.chat, command.request);
    if (!request.ok()) return Fail(request.status());
    absl::StatusOr<GenerationResult> result = Generate(**engine, *request, print_text);
    if (!result.ok()) return Fail(result.status());
    if (command.json) {
      std::cout << ResultJson(*result, **engine, use_medusa)
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << std::endl;
    } else {
      PrintSummary(*result, use_medusa);
    }
  }
  return 0;
}

}  // namespace medusa::tools
