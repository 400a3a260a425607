#include "tools/training_data.h"

#include <cstring>
#include <filesystem>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/medusa/heads_file.h"
#include "engine/model/loader.h"
#include "engine/model/safetensors.h"
#include "engine/tokenizer/chat_template.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "kernels/base/status_macros.h"
#include "tools/progress.h"

namespace medusa::tools {

absl::StatusOr<BaseMatrices> LoadBaseMatrices(const std::string& model_path) {
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(model_path));
  BaseMatrices out;
  if (model.weights.classifier.empty()) {
    out.classifier = std::move(model.weights.token_embedding.values);
  } else {
    out.classifier = std::move(model.weights.classifier.values);
    out.untied_embedding = std::move(model.weights.token_embedding.values);
  }
  return out;
}

absl::StatusOr<HeadKind> HeadKindOf(const std::string& name) {
  if (name == kHeadTypeMedusa) return HeadKind::kMedusa;
  if (name == kHeadTypeHydra) return HeadKind::kHydra;
  return absl::InvalidArgumentError(absl::StrCat("--head-type must be medusa or hydra, got '", name, "'"));
}

std::vector<std::vector<int32_t>> EncodeSeeds(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                              int count, int max_tokens) {
  const bool chat = ChatFormatOf(tokenizer).ok();
  std::vector<std::vector<int32_t>> out;
  for (const std::string& text : texts) {
    if (count > 0 && static_cast<int>(out.size()) >= count) break;
    absl::StatusOr<std::vector<int32_t>> ids = EncodePrompt(tokenizer, text, chat);
    if (!ids.ok() || static_cast<int>(ids->size()) > max_tokens) continue;
    out.push_back(*std::move(ids));
  }
  return out;
}

absl::StatusOr<DistillRun> Distill(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                   const SelfDistillOptions& options, const std::string& label) {
  ProgressBar bar(label);
  DistillRun run;
  run.prompts = static_cast<int>(prompts.size());
  absl::StatusOr<DistillSet> set = SelfDistill(engine, prompts, options, [&](const SelfDistillProgress& p) {
    run.tokens = p.tokens;
    run.seconds = p.elapsed_seconds;
    bar.Update(p.prompts_done, p.prompts_total, p.elapsed_seconds > 0 ? p.tokens / p.elapsed_seconds : 0,
               "tokens/s", absl::StrFormat("%d tokens", p.tokens));
  });
  bar.Finish();
  if (!set.ok()) return set.status();
  run.set = *std::move(set);
  return run;
}

absl::StatusOr<DistillRun> CalibrationRows(Engine& engine, int num_heads, const DistillFlags& distill,
                                           const CalibrationFlags& calibration) {
  ASSIGN_OR_RETURN(std::vector<std::string> texts, LoadSeedPrompts(calibration.prompts_file));
  std::vector<std::vector<int32_t>> prompts =
      EncodeSeeds(engine.tokenizer(), texts, calibration.count, distill.max_prompt_tokens);
  SelfDistillOptions options;
  options.num_heads = num_heads;
  options.max_new_tokens = distill.gen_tokens;
  options.concurrency = distill.concurrency;
  return Distill(engine, prompts, options, "calibration data");
}

absl::Status SaveDistillCache(const std::string& path, const DistillRun& run, const nlohmann::json& fingerprint) {
  std::vector<float> targets(run.set.targets.begin(), run.set.targets.end());  // exact below 2^24
  const int64_t rows = run.set.rows();
  std::vector<safetensors::TensorToWrite> tensors = {
      {"hidden", {rows, run.set.dim}, run.set.hidden, safetensors::DType::kF32},
      {"targets", {rows, run.set.num_heads}, targets, safetensors::DType::kF32},
  };
  std::vector<float> next(run.set.next.begin(), run.set.next.end());
  if (run.set.has_next()) tensors.push_back({"next", {rows}, next, safetensors::DType::kF32});
  nlohmann::json metadata = {{"fingerprint", fingerprint.dump()},
                             {"prompts", std::to_string(run.prompts)},
                             {"tokens", std::to_string(run.tokens)},
                             {"seconds", absl::StrCat(run.seconds)}};
  return safetensors::WriteFile(path, tensors, metadata);
}

std::optional<DistillRun> LoadDistillCache(const std::string& path, const nlohmann::json& fingerprint) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
  if (!file.ok()) return std::nullopt;
  const nlohmann::json& meta = (*file)->metadata();
  if (meta.value("fingerprint", "") != fingerprint.dump()) return std::nullopt;
  const safetensors::TensorInfo* hidden = (*file)->FindTensor("hidden");
  const safetensors::TensorInfo* targets = (*file)->FindTensor("targets");
  if (hidden == nullptr || targets == nullptr || hidden->shape.size() != 2 || targets->shape.size() != 2 ||
      hidden->shape[0] != targets->shape[0] || hidden->shape[1] <= 0 || targets->shape[1] <= 0 ||
      hidden->shape[1] > std::numeric_limits<int>::max() || targets->shape[1] > std::numeric_limits<int>::max()) {
    return std::nullopt;  // not a cache this code wrote: made afresh
  }
  DistillRun run;
  run.from_cache = true;
  run.set.dim = static_cast<int>(hidden->shape[1]);
  run.set.num_heads = static_cast<int>(targets->shape[1]);
  std::vector<float> target_values;
  if (!(*file)->ReadTensor("hidden", &run.set.hidden).ok() || !(*file)->ReadTensor("targets", &target_values).ok()) {
    return std::nullopt;
  }
  run.set.targets.assign(target_values.begin(), target_values.end());
  // Caches written before next tokens were kept hold none: Medusa heads train on them as they are.
  if (const safetensors::TensorInfo* next = (*file)->FindTensor("next"); next != nullptr) {
    std::vector<float> next_values;
    if (next->shape != std::vector<int64_t>{hidden->shape[0]} || !(*file)->ReadTensor("next", &next_values).ok()) {
      return std::nullopt;
    }
    run.set.next.assign(next_values.begin(), next_values.end());
  }
  // The counts are only reported; a cache whose metadata does not parse is not used (std::stoi
  // would throw on it and end the process).
  if (!absl::SimpleAtoi(meta.value("prompts", "0"), &run.prompts) ||
      !absl::SimpleAtoi(meta.value("tokens", "0"), &run.tokens) ||
      !absl::SimpleAtod(meta.value("seconds", "0"), &run.seconds)) {
    return std::nullopt;
  }
  return run;
}

}  // namespace medusa::tools
