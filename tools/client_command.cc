// `medusa client`: the requests of `medusa generate`, sent to a medusa-server over gRPC;
// the same JSON comes back.

#include <cstdio>
#include <iostream>
#include <string>

#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/generator_client.h"
#include "tools/prompts.h"

namespace medusa::tools {
namespace {

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    default: return "";
  }
}

// The JSON `medusa generate --json` prints, from the stream and its usage.
nlohmann::json ResultJson(const StreamResult& r, const v1::ModelInfo& info, bool medusa) {
  const v1::Usage& u = r.finish.usage();
  const bool tree = medusa && info.has_heads() && info.tree().num_nodes() > 1;
  const int new_tokens = u.generated_tokens();
  return {
      {"mode", tree ? "medusa" : "plain"},
      {"tree_nodes", medusa && info.has_heads() ? info.tree().num_nodes() : 1},
      {"accepted_tokens", u.accepted_draft_tokens()},
      {"accepted_per_position", std::vector<int>(u.accepted_per_position().begin(), u.accepted_per_position().end())},
      {"accepted_length_counts",
       std::vector<int>(u.accepted_length_counts().begin(), u.accepted_length_counts().end())},
      {"prompt_tokens", u.prompt_tokens()},
      {"new_tokens", new_tokens},
      {"token_ids", r.token_ids},
      {"text", r.text},
      {"steps", u.decoding_steps()},
      {"acceleration_rate", u.acceleration_rate()},
      {"prefill_seconds", u.prefill_seconds()},
      {"prefill_tokens_per_second", u.prefill_seconds() > 0 ? u.prompt_tokens() / u.prefill_seconds() : 0.0},
      {"decode_seconds", u.decode_seconds()},
      {"tokens_per_second", u.decode_seconds() > 0 ? (new_tokens - 1) / u.decode_seconds() : 0.0},
      {"mean_step_ms", u.decoding_steps() > 1 ? 1e3 * u.decode_seconds() / (u.decoding_steps() - 1) : 0.0},
      {"finish_reason", FinishReasonName(r.finish.reason())},
      {"time_to_first_token_seconds", u.time_to_first_token_seconds()},
      {"total_seconds", u.total_seconds()},
  };
}

}  // namespace

int RunClient(const ClientCommand& command) {
  absl::StatusOr<std::vector<PromptSpec>> prompts = ReadPrompts(command.prompts);
  if (!prompts.ok()) return Fail(prompts.status());
  absl::StatusOr<std::unique_ptr<v1::Generator::Stub>> stub = Connect(command.server);
  if (!stub.ok()) return Fail(stub.status());
  absl::StatusOr<v1::ModelInfo> info = GetModelInfo(**stub);
  if (!info.ok()) return Fail(info.status());
  const bool json = command.json;
  const bool medusa = !command.request.no_medusa;
  for (const PromptSpec& spec : *prompts) {
    TextSink print = nullptr;
    if (!json) {
      print = [](const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      };
    }
    absl::StatusOr<StreamResult> result =
        RunStream(**stub, RequestFor(spec, command.prompts.chat, command.request), print);
    if (!result.ok()) return Fail(result.status());
    const nlohmann::json summary = ResultJson(*result, *info, medusa);
    if (json) {
      std::cout << summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    } else {
      std::fprintf(stderr,
                   "\n[%d prompt tokens, %d new tokens in %d steps (%.2f tokens/step, %s); first token "
                   "after %.1f ms, decode %.1f tok/s; %s]\n",
                   summary["prompt_tokens"].get<int>(), summary["new_tokens"].get<int>(),
                   summary["steps"].get<int>(), summary["acceleration_rate"].get<double>(),
                   summary["mode"].get<std::string>().c_str(), result->ttft_ms,
                   summary["tokens_per_second"].get<double>(), summary["finish_reason"].get<std::string>().c_str());
    }
  }
  return 0;
}

}  // namespace medusa::tools
