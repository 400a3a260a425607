#include "engine/train/self_distill.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/scheduler/engine_core.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

// The training rows of one answer: `hidden` holds, per generated token, the final-normed
// hidden state of the position whose logits chose it (the prompt's last position first).
// Rows t = prompt_len - 1 .. n - 3 keep hidden h_t, the next token x[t+1] and targets
// x[t+k+2] (-1 past the end),
// n counting prompt and answer; row n - 2 would predict only the last token, which the
// base model does (no head target), so it is dropped.
DistillSet AnswerRows(const std::vector<int32_t>& prompt, const GenerationResult& answer,
                      const std::vector<float>& hidden, int dim, int num_heads) {
  std::vector<int32_t> tokens = prompt;
  tokens.insert(tokens.end(), answer.token_ids.begin(), answer.token_ids.end());
  const int n = static_cast<int>(tokens.size());
  const int first = static_cast<int>(prompt.size()) - 1;
  const int rows = std::max(0, n - 2 - first);
  DistillSet set;
  set.dim = dim;
  set.num_heads = num_heads;
  set.hidden.assign(hidden.begin(), hidden.begin() + static_cast<size_t>(rows) * dim);
  set.targets.resize(static_cast<size_t>(rows) * num_heads);
  set.next.resize(rows);
  for (int r = 0; r < rows; ++r) {
    const int t = first + r;
    set.next[r] = tokens[t + 1];
    for (int k = 0; k < num_heads; ++k) {
      const int target = t + k + 2;
      set.targets[static_cast<size_t>(r) * num_heads + k] = target < n ? tokens[target] : -1;
    }
  }
  return set;
}

absl::Status CheckOptions(const SelfDistillOptions& options) {
  if (options.num_heads < 1 || options.max_new_tokens < 1 || options.concurrency < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "self-distillation needs num_heads, max_new_tokens and concurrency >= 1 (got %d, %d, %d)", options.num_heads,
        options.max_new_tokens, options.concurrency));
  }
  return options.sampling.Validate();
}

std::string PromptText(const nlohmann::json& item) {
  if (item.is_string()) return item.get<std::string>();
  if (!item.is_object()) return "";
  if (auto it = item.find("conversations"); it != item.end() && it->is_array()) {
    for (const nlohmann::json& turn : *it) {
      if (turn.is_object() && turn.contains("from") && turn["from"] == "human" && turn.contains("value") &&
          turn["value"].is_string()) {
        return turn["value"].get<std::string>();
      }
    }
    return "";
  }
  if (auto it = item.find("instruction"); it != item.end() && it->is_string()) return it->get<std::string>();
  if (auto it = item.find("prompt"); it != item.end() && it->is_string()) return it->get<std::string>();
  return "";
}

}  // namespace

absl::StatusOr<DistillSet> SelfDistill(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                       const SelfDistillOptions& options,
                                       const std::function<void(const SelfDistillProgress&)>& on_progress) {
  RETURN_IF_ERROR(CheckOptions(options));
  const int max_seq_len = engine.config().max_seq_len;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int length = static_cast<int>(prompts[i].size());
    if (length == 0 || length + 1 >= max_seq_len) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "seed prompt %d has %d tokens; the model's context of %d leaves no room for an answer", i, length,
          max_seq_len));
    }
  }
  // The frozen model answers through the engine's own decoding loop, plainly, `concurrency`
  // answers per forward pass; each answer's hook collects its hidden states.
  StepOptions step;
  step.prefill_chunk = engine.options().prefill_chunk;
  step.max_batch = options.concurrency;
  EngineCore core(engine, step);
  std::vector<GenerateHooks> hooks(prompts.size());
  std::vector<std::vector<float>> hidden(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    hooks[i].on_token = [&hidden, i](absl::Span<const float> h, int32_t) {
      hidden[i].insert(hidden[i].end(), h.begin(), h.end());
    };
    GenerationRequest request;
    request.prompt_ids = prompts[i];
    request.max_tokens = options.max_new_tokens;
    request.sampling = options.sampling;
    request.sampling.seed += static_cast<uint64_t>(i);
    request.use_medusa = false;
    RequestOptions request_options;
    request_options.hooks = &hooks[i];
    RETURN_IF_ERROR(core.Add(i, std::move(request), std::move(request_options)));
  }
  std::vector<DistillSet> per_prompt(prompts.size());
  SelfDistillProgress progress{.prompts_total = static_cast<int>(prompts.size())};
  core.set_step_observer([&](const StepReport& report) { progress.tokens += report.tokens; });
  const auto start = std::chrono::steady_clock::now();
  while (core.has_unfinished()) {
    for (RequestOutput& out : core.Step()) {
      if (!out.result.ok()) return out.result.status();
      per_prompt[out.id] =
          AnswerRows(prompts[out.id], *out.result, hidden[out.id], engine.config().dim, options.num_heads);
      std::vector<float>().swap(hidden[out.id]);
      ++progress.prompts_done;
    }
    if (on_progress) {
      progress.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      on_progress(progress);
    }
  }
  DistillSet all;
  all.dim = engine.config().dim;
  all.num_heads = options.num_heads;
  for (const DistillSet& set : per_prompt) {
    all.hidden.insert(all.hidden.end(), set.hidden.begin(), set.hidden.end());
    all.targets.insert(all.targets.end(), set.targets.begin(), set.targets.end());
    all.next.insert(all.next.end(), set.next.begin(), set.next.end());
  }
  return all;
}

absl::StatusOr<std::vector<std::string>> LoadSeedPrompts(const std::string& path) {
  // Bounded, regular files only, nesting checked before anything recursive (engine/io/json_reader.h).
  ASSIGN_OR_RETURN(const nlohmann::json doc, ReadJsonFile(path, kMaxPromptsFileBytes, "seed prompts"));
  if (!doc.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' must hold a JSON list of prompts"));
  }
  std::vector<std::string> prompts;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < doc.size(); ++i) {
    if (!doc[i].is_string() && !doc[i].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("'%s' item %d is neither a string nor an object", path, i));
    }
    std::string text = PromptText(doc[i]);
    if (text.empty() || !seen.insert(text).second) continue;
    prompts.push_back(std::move(text));
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat("'", path, "' holds no prompts"));
  return prompts;
}

}  // namespace medusa
