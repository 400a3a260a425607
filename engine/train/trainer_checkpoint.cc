#include "engine/train/trainer_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/io/json_reader.h"
#include "engine/medusa/heads_file.h"
#include "kernels/base/status_macros.h"

namespace medusa::train_internal {
namespace {

constexpr char kStateKey[] = "medusa_trainer_state";
constexpr char kStateFormat[] = "medusa-heads-trainer/1";
constexpr char kHeadPrefix[] = "medusa_head.";  // LoadMedusaHeads reads a combined file by it
constexpr char kExpAvgPrefix[] = "optimizer.exp_avg.";
constexpr char kExpAvgSqPrefix[] = "optimizer.exp_avg_sq.";

// A 64-bit hash of bytes (word-wise multiply-xorshift): detects a checkpoint made on other
// data or another classifier. Stable across runs and machines of the same endianness.
uint64_t Fingerprint(const void* data, size_t bytes, uint64_t h) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * kMul;
    h ^= h >> 31;
  }
  for (; i < bytes; ++i) h = ((h ^ p[i]) * kMul) ^ (h >> 29);
  return h ^ (bytes * kMul);
}

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

std::string DataFingerprint(const DistillSet& data) {
  const int64_t shape[3] = {data.dim, data.num_heads, data.rows()};
  uint64_t h = Fingerprint(shape, sizeof(shape), 1);
  h = Fingerprint(data.hidden.data(), data.hidden.size() * sizeof(float), h);
  h = Fingerprint(data.targets.data(), data.targets.size() * sizeof(int32_t), h);
  if (!data.next.empty()) h = Fingerprint(data.next.data(), data.next.size() * sizeof(int32_t), h);
  return Hex(h);
}

// The options a checkpoint must share with the run resuming it.
nlohmann::json OptionsJson(const TrainerOptions& o) {
  nlohmann::json options = {{"num_heads", o.num_heads},
                            {"num_layers", o.num_layers},
                            {"share_lm_head", o.share_lm_head},
                            {"batch_size", o.batch_size},
                            {"epochs", o.epochs},
                            {"lr", o.lr},
                            {"weight_decay", o.weight_decay},
                            {"warmup_steps", o.warmup_steps},
                            {"min_lr_ratio", o.min_lr_ratio},
                            {"grad_clip", o.grad_clip},
                            {"seed", o.seed},
                            {"loss_decay", o.loss_decay},
                            {"adam_beta1", o.adam_beta1},
                            {"adam_beta2", o.adam_beta2},
                            {"adam_eps", o.adam_eps}};
  // Only Hydra runs name their type, so checkpoints of Medusa runs made before there was a
  // choice still resume.
  if (o.head_kind == HeadKind::kHydra) options["head_type"] = kHeadTypeHydra;
  if (o.teacher_weight > 0.0f) options["teacher_weight"] = o.teacher_weight;  // likewise
  if (!o.draft_vocab.empty()) {  // likewise: only runs over a draft vocabulary name one
    options["draft_vocab"] = {
        {"size", o.draft_vocab.size()},
        {"fingerprint", Hex(Fingerprint(o.draft_vocab.data(), o.draft_vocab.size() * sizeof(int32_t), 2))}};
  }
  return options;
}

// Checks a checkpoint's state against this run: FailedPrecondition naming what differs. The
// saved state comes from a file: any key may be missing or of any type.
absl::Status CheckState(const std::string& path, const nlohmann::json& saved, const nlohmann::json& now) {
  auto mismatch = [&](const std::string& what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint '", path, "' does not match this run: ", what,
        "; remove it or run with what it was made with"));
  };
  static const nlohmann::json kMissing;
  auto field = [](const nlohmann::json& object, const std::string& key) -> const nlohmann::json& {
    auto it = object.find(key);
    return it == object.end() ? kMissing : *it;
  };
  if (const nlohmann::json& format = field(saved, "format"); format != kStateFormat) {
    return mismatch(absl::StrCat("format ", JsonSnippet(format), ", expected '", kStateFormat, "'"));
  }
  const nlohmann::json& options = field(saved, "options");
  for (const auto& [key, value] : now["options"].items()) {
    if (const nlohmann::json& saved_value = options.is_object() ? field(options, key) : kMissing;
        saved_value != value) {
      return mismatch(
          absl::StrCat("it was written with ", key, " = ", JsonSnippet(saved_value), ", this run has ", value.dump()));
    }
  }
  if (options.is_object()) {
    for (const auto& [key, value] : options.items()) {
      if (!now["options"].contains(key)) {
        return mismatch(absl::StrCat("it was written with ", key, " = ", JsonSnippet(value), ", this run has none"));
      }
    }
  }
  if (const nlohmann::json& classifier = field(saved, "classifier"); classifier != now["classifier"]) {
    return mismatch(absl::StrCat("it was trained against classifier ", JsonSnippet(classifier), ", this run's is ",
                                 now["classifier"].dump()));
  }
  if (const nlohmann::json& data = field(saved, "data"); data != now["data"]) {
    return mismatch(absl::StrCat("it was trained on data ", JsonSnippet(data), ", this run's is ", now["data"].dump()));
  }
  const nlohmann::json& step = field(saved, "step");
  if (field(saved, "total_steps") != now["total_steps"] || !step.is_number_integer() || step.get<int64_t>() < 0 ||
      step.get<int64_t>() > now["total_steps"].get<int64_t>()) {
    return mismatch(absl::StrCat("it is at step ", JsonSnippet(step), " of ", JsonSnippet(field(saved, "total_steps")),
                                 ", this run has ", now["total_steps"].dump(), " steps"));
  }
  return absl::OkStatus();
}

}  // namespace

nlohmann::json TrainingState(const TrainerOptions& options, const ModelConfig& config,
                             absl::Span<const float> classifier, const DistillSet& data, int64_t total_steps) {
  const std::string classifier_fingerprint = Hex(Fingerprint(classifier.data(), classifier.size() * sizeof(float), 2));
  return {{"format", kStateFormat},
          {"step", 0},
          {"total_steps", total_steps},
          {"options", OptionsJson(options)},
          {"data", {{"rows", data.rows()}, {"fingerprint", DataFingerprint(data)}}},
          {"classifier", {{"vocab", config.vocab_size}, {"dim", config.dim}, {"fingerprint", classifier_fingerprint}}}};
}

absl::Status SaveCheckpoint(const std::string& path, absl::Span<const ParamTensor> params,
                            const nlohmann::json& state, const TrainerOptions& options) {
  std::vector<safetensors::TensorToWrite> tensors;
  tensors.reserve(params.size() * 3);
  for (const ParamTensor& p : params) {
    tensors.push_back({kHeadPrefix + p.name, p.shape, absl::MakeConstSpan(p.value, p.size)});
    tensors.push_back({kExpAvgPrefix + p.name, p.shape, absl::MakeConstSpan(p.exp_avg, p.size)});
    tensors.push_back({kExpAvgSqPrefix + p.name, p.shape, absl::MakeConstSpan(p.exp_avg_sq, p.size)});
  }
  nlohmann::json meta = {{kStateKey, state.dump()},
                         {"medusa_num_heads", std::to_string(options.num_heads)},
                         {"medusa_num_layers", std::to_string(options.num_layers)},
                         {kHeadTypeKey, options.head_kind == HeadKind::kHydra ? kHeadTypeHydra : kHeadTypeMedusa}};
  return safetensors::WriteFile(path, tensors, meta);
}

absl::StatusOr<Checkpoint> OpenCheckpoint(const std::string& path, const nlohmann::json& state,
                                          const ModelConfig& config, const TrainerOptions& options) {
  Checkpoint checkpoint;
  ASSIGN_OR_RETURN(checkpoint.file, safetensors::File::Open(path));
  const nlohmann::json& meta = checkpoint.file->metadata();
  if (!meta.contains(kStateKey) || !meta[kStateKey].is_string()) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", path, "' is not a trainer checkpoint (no '", kStateKey, "' in its metadata)"));
  }
  absl::StatusOr<nlohmann::json> saved = ParseJson(meta[kStateKey].get<std::string>(), path);
  if (!saved.ok() || !saved->is_object()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint '", path, "': its '", kStateKey, "' is not a JSON object"));
  }
  RETURN_IF_ERROR(CheckState(path, *saved, state));
  ASSIGN_OR_RETURN(checkpoint.heads, LoadMedusaHeads(*checkpoint.file, config));
  const MedusaHeadsWeights& heads = checkpoint.heads;
  if (heads.num_heads != options.num_heads || heads.num_layers != options.num_layers ||
      heads.has_projection() == options.share_lm_head || heads.kind != options.head_kind) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint '", path, "' holds ", heads.num_heads, " heads of ", heads.num_layers, " blocks",
                     heads.has_projection() ? " with" : " without", " own projections",
                     heads.kind == HeadKind::kHydra ? " (Hydra)" : "", "; the options want ", options.num_heads, " of ",
                     options.num_layers, options.share_lm_head ? " without" : " with",
                     options.head_kind == HeadKind::kHydra ? " (Hydra)" : ""));
  }
  checkpoint.step = (*saved)["step"].get<int64_t>();
  return checkpoint;
}

absl::Status RestoreMoments(const Checkpoint& checkpoint, const std::string& path,
                            absl::Span<const ParamTensor> params) {
  std::vector<float> values;
  for (const ParamTensor& p : params) {
    for (const auto& [prefix, dest] : {std::pair{kExpAvgPrefix, p.exp_avg}, std::pair{kExpAvgSqPrefix, p.exp_avg_sq}}) {
      const std::string name = prefix + p.name;
      const safetensors::TensorInfo* info = checkpoint.file->FindTensor(name);
      if (info == nullptr || info->shape != p.shape || info->dtype != safetensors::DType::kF32) {
        return absl::FailedPreconditionError(absl::StrCat(
            "checkpoint '", path, "': optimizer tensor '", name, "' is missing or not F32 of the parameter's shape"));
      }
      RETURN_IF_ERROR(checkpoint.file->ReadTensor(name, &values));
      std::copy(values.begin(), values.end(), dest);
    }
  }
  return absl::OkStatus();
}

}  // namespace medusa::train_internal
