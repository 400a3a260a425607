#include "engine/generate/request.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/base/status_macros.h"

namespace medusa {

std::string_view FinishReasonName(FinishReason reason) {
  return reason == FinishReason::kStop ? "stop" : "length";
}

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

absl::Status ValidateRequest(const ModelConfig& config, const GenerationRequest& request) {
  if (request.prompt_ids.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (int32_t id : request.prompt_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token id %d is outside the vocabulary [0, %d)", id, config.vocab_size));
    }
  }
  if (static_cast<int>(request.prompt_ids.size()) >= config.max_seq_len) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prompt has %d tokens; the model's context is %d, which leaves no room to generate",
                        request.prompt_ids.size(), config.max_seq_len));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("max_tokens must be >= 1, got %d", request.max_tokens));
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

}  // namespace medusa
