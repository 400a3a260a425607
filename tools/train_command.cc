// `medusa train` and `medusa calibrate`: Medusa-1 heads by self-distillation
// (Cai et al. 2024), and per-head top-k accuracies on held-out prompts.
//
// train: the frozen model answers seed prompts itself (SelfDistill), its hidden
// states and the tokens that followed become training rows, HeadsTrainer fits the
// heads, and the result is written in the reference safetensors layout with a JSON
// of the settings and costs beside it, then calibrated on AlpacaEval prompts.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "engine/medusa/heads_file.h"
#include "engine/model/loader.h"
#include "engine/model/safetensors.h"
#include "engine/train/draft_vocab.h"
#include "engine/train/heads_evaluation.h"
#include "engine/train/heads_trainer.h"
#include "engine/train/self_distill.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/progress.h"

ABSL_FLAG(std::string, seed_prompts, "data/sharegpt_first_turns.json",
          "Seed prompts for self-distillation (ShareGPT conversations: first human turns)");
ABSL_FLAG(int32_t, num_prompts, 1000, "Seed prompts to answer (after de-duplication); 0 for all");
ABSL_FLAG(int32_t, max_prompt_tokens, 512, "Skip seed prompts longer than this (tokens, template included)");
ABSL_FLAG(int32_t, gen_tokens, 192, "Most tokens the model writes per seed prompt");
ABSL_FLAG(double, gen_temperature, 0.0, "Temperature of the model's own answers (0: greedy)");
ABSL_FLAG(int32_t, concurrency, 16, "Answers decoded together in one batched forward pass");
ABSL_FLAG(int32_t, num_heads, 4, "Medusa heads to train");
ABSL_FLAG(int32_t, num_layers, 1, "Residual blocks per head");
ABSL_FLAG(bool, share_lm_head, false,
          "Heads use the model's classifier as their vocabulary projection (small files) instead "
          "of their own (initialized from it)");
ABSL_FLAG(int32_t, epochs, 1, "Passes over the training rows");
ABSL_FLAG(int32_t, batch_size, 64, "Rows per optimizer step");
ABSL_FLAG(double, lr, 1e-3, "Peak learning rate (AdamW; linear warm-up, then cosine decay)");
ABSL_FLAG(double, weight_decay, 0.0, "AdamW decoupled weight decay");
ABSL_FLAG(std::string, dtype, "f16", "Heads file precision: f32, f16 or bf16");
ABSL_FLAG(double, draft_coverage, 0.995,
          "Draft vocabulary: the most frequent tokens of the model's answers that make up this share of "
          "them (the heads propose only these; cheaper projections, same output); 0: the whole vocabulary");
ABSL_FLAG(int32_t, draft_min_tokens, 1024, "Draft vocabulary: at least this many tokens");
ABSL_FLAG(std::string, checkpoint, "",
          "Training checkpoint (default <out>.ckpt); training resumes from it when present");
ABSL_FLAG(std::string, data_cache, "",
          "Self-distillation rows cache (default <out>.distill.safetensors; 'none' for no cache)");
ABSL_FLAG(std::string, calibration_prompts, "data/alpaca_eval.json",
          "Held-out prompts for per-head top-k accuracy (AlpacaEval instructions)");
ABSL_FLAG(int32_t, calibration_count, 100, "Held-out prompts to answer for calibration");
ABSL_FLAG(std::string, calibration_out, "",
          "Calibration JSON to write (default <heads>.calibration.json)");

namespace medusa::tools {
namespace {

std::atomic<bool> g_stop_requested{false};

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "medusa: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// "x/heads.safetensors" -> "x/heads" + suffix.
std::string Beside(const std::string& heads_path, const std::string& suffix) {
  std::string stem = heads_path;
  if (absl::EndsWith(stem, ".safetensors")) stem.resize(stem.size() - strlen(".safetensors"));
  return stem + suffix;
}

absl::StatusOr<std::unique_ptr<Engine>> OpenEngine() {
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required");
  EngineOptions options;
  options.model_path = absl::GetFlag(FLAGS_model);
  options.tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  options.backend.device = absl::GetFlag(FLAGS_device);
  options.backend.threads = absl::GetFlag(FLAGS_threads);
  options.kv_cache_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_kv_cache_mb)) << 20;
  return Engine::Create(options);
}

// The model's classifier [vocab, dim] in float32 (the embedding when tied).
absl::StatusOr<std::vector<float>> LoadClassifier(const std::string& model_path) {
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(model_path));
  return model.weights.classifier.empty() ? std::move(model.weights.token_embedding)
                                          : std::move(model.weights.classifier);
}

// Prompt texts to token ids: the chat template when the model has one; prompts
// longer than max_tokens are skipped.
std::vector<std::vector<int32_t>> EncodeSeeds(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                              int count, int max_tokens) {
  const bool chat = !tokenizer.chat_template().empty();
  std::vector<std::vector<int32_t>> out;
  for (const std::string& text : texts) {
    if (count > 0 && static_cast<int>(out.size()) >= count) break;
    absl::StatusOr<std::vector<int32_t>> ids = EncodePrompt(tokenizer, text, chat);
    if (!ids.ok() || static_cast<int>(ids->size()) > max_tokens) continue;
    out.push_back(*std::move(ids));
  }
  return out;
}

struct DistillRun {
  DistillSet set;
  int prompts = 0;
  int64_t tokens = 0;
  double seconds = 0;
  bool from_cache = false;
};

absl::Status SaveDistillCache(const std::string& path, const DistillRun& run, const nlohmann::json& fingerprint) {
  std::vector<float> targets(run.set.targets.begin(), run.set.targets.end());  // exact below 2^24
  const int64_t rows = run.set.rows();
  std::vector<safetensors::TensorToWrite> tensors = {
      {"hidden", {rows, run.set.dim}, run.set.hidden, safetensors::DType::kF32},
      {"targets", {rows, run.set.num_heads}, targets, safetensors::DType::kF32},
  };
  nlohmann::json metadata = {{"fingerprint", fingerprint.dump()},
                             {"prompts", std::to_string(run.prompts)},
                             {"tokens", std::to_string(run.tokens)},
                             {"seconds", absl::StrCat(run.seconds)}};
  const std::string temp = path + ".tmp";
  RETURN_IF_ERROR(safetensors::WriteFile(temp, tensors, metadata));
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) return absl::InternalError(absl::StrCat("cannot write '", path, "': ", error.message()));
  return absl::OkStatus();
}

// The cached rows when the cache was made with the same settings; nullopt otherwise.
std::optional<DistillRun> LoadDistillCache(const std::string& path, const nlohmann::json& fingerprint) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
  if (!file.ok()) return std::nullopt;
  const nlohmann::json& meta = (*file)->metadata();
  if (meta.value("fingerprint", "") != fingerprint.dump()) return std::nullopt;
  const safetensors::TensorInfo* hidden = (*file)->FindTensor("hidden");
  const safetensors::TensorInfo* targets = (*file)->FindTensor("targets");
  if (hidden == nullptr || targets == nullptr || hidden->shape.size() != 2 || targets->shape.size() != 2) {
    return std::nullopt;
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
  run.prompts = std::stoi(meta.value("prompts", "0"));
  run.tokens = std::stoll(meta.value("tokens", "0"));
  run.seconds = std::stod(meta.value("seconds", "0"));
  return run;
}

// The draft vocabulary from the tokens the model wrote: every head's targets are its
// answers' tokens (head 0's cover all but each answer's first two).
std::vector<int32_t> DraftVocabOf(const DistillSet& data, int vocab, double coverage, int min_tokens) {
  std::vector<int64_t> counts(vocab, 0);
  for (int r = 0; r < data.rows(); ++r) {
    const int32_t token = data.Targets(r)[0];
    if (token >= 0 && token < vocab) ++counts[token];
  }
  return ChooseDraftVocab(counts, std::min(coverage, 1.0), min_tokens);
}

// Self-distillation with a progress bar.
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

// Held-out rows: greedy answers to the calibration prompts.
absl::StatusOr<DistillRun> CalibrationRows(Engine& engine, int num_heads) {
  ASSIGN_OR_RETURN(std::vector<std::string> texts, LoadSeedPrompts(absl::GetFlag(FLAGS_calibration_prompts)));
  std::vector<std::vector<int32_t>> prompts = EncodeSeeds(
      engine.tokenizer(), texts, absl::GetFlag(FLAGS_calibration_count), absl::GetFlag(FLAGS_max_prompt_tokens));
  SelfDistillOptions options;
  options.num_heads = num_heads;
  options.max_new_tokens = absl::GetFlag(FLAGS_gen_tokens);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  return Distill(engine, prompts, options, "calibration data");
}

nlohmann::json Accuracies(const std::vector<std::vector<double>>& topk) { return topk; }

absl::Status WriteJson(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path);
  out << value.dump(2) << "\n";
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

void PrintAccuracies(const char* what, const std::vector<std::vector<double>>& topk) {
  for (size_t k = 0; k < topk.size(); ++k) {
    std::fprintf(stderr, "%s head %zu: top-1 %.3f  top-5 %.3f  top-10 %.3f\n", what, k, topk[k][0],
                 topk[k][std::min<size_t>(4, topk[k].size() - 1)], topk[k].back());
  }
}

absl::StatusOr<safetensors::DType> HeadsDType() {
  const std::string name = absl::GetFlag(FLAGS_dtype);
  if (name == "f32") return safetensors::DType::kF32;
  if (name == "f16") return safetensors::DType::kF16;
  if (name == "bf16") return safetensors::DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32, f16 or bf16, got '", name, "'"));
}

}  // namespace

int RunTrain() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return Fail(absl::InvalidArgumentError("--out HEADS.safetensors is required"));
  absl::StatusOr<safetensors::DType> dtype = HeadsDType();
  if (!dtype.ok()) return Fail(dtype.status());
  if (const double c = absl::GetFlag(FLAGS_draft_coverage); !(c >= 0 && c <= 1)) {
    return Fail(absl::InvalidArgumentError(absl::StrFormat("--draft-coverage must be in [0, 1], got %g", c)));
  }
  if (absl::GetFlag(FLAGS_draft_min_tokens) < 1) {
    return Fail(absl::InvalidArgumentError("--draft-min-tokens must be >= 1"));
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = OpenEngine();
  if (!engine.ok()) return Fail(engine.status());
  absl::StatusOr<std::vector<float>> classifier = LoadClassifier(absl::GetFlag(FLAGS_model));
  if (!classifier.ok()) return Fail(classifier.status());

  // 1. Self-distillation (or its cache).
  absl::StatusOr<std::vector<std::string>> texts = LoadSeedPrompts(absl::GetFlag(FLAGS_seed_prompts));
  if (!texts.ok()) return Fail(texts.status());
  std::vector<std::vector<int32_t>> prompts = EncodeSeeds((*engine)->tokenizer(), *texts,
                                                          absl::GetFlag(FLAGS_num_prompts),
                                                          absl::GetFlag(FLAGS_max_prompt_tokens));
  SelfDistillOptions distill;
  distill.num_heads = absl::GetFlag(FLAGS_num_heads);
  distill.max_new_tokens = absl::GetFlag(FLAGS_gen_tokens);
  distill.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_gen_temperature));
  distill.sampling.seed = absl::GetFlag(FLAGS_seed);
  distill.concurrency = absl::GetFlag(FLAGS_concurrency);
  const nlohmann::json data_settings = {
      {"model", std::filesystem::path(absl::GetFlag(FLAGS_model)).filename().string()},
      {"model_bytes", std::filesystem::file_size(absl::GetFlag(FLAGS_model))},
      {"seed_prompts", std::filesystem::path(absl::GetFlag(FLAGS_seed_prompts)).filename().string()},
      {"prompts", prompts.size()},
      {"max_prompt_tokens", absl::GetFlag(FLAGS_max_prompt_tokens)},
      {"gen_tokens", distill.max_new_tokens},
      {"gen_temperature", distill.sampling.temperature},
      {"seed", distill.sampling.seed},
      {"num_heads", distill.num_heads},
  };
  std::string cache = absl::GetFlag(FLAGS_data_cache);
  if (cache.empty()) cache = Beside(out, ".distill.safetensors");
  std::optional<DistillRun> data = cache == "none" ? std::nullopt : LoadDistillCache(cache, data_settings);
  if (data) {
    std::fprintf(stderr, "self-distillation rows from %s (%d rows)\n", cache.c_str(), data->set.rows());
  } else {
    absl::StatusOr<DistillRun> run = Distill(**engine, prompts, distill, "self-distillation");
    if (!run.ok()) return Fail(run.status());
    data = *std::move(run);
    if (cache != "none") {
      if (absl::Status s = SaveDistillCache(cache, *data, data_settings); !s.ok()) return Fail(s);
    }
  }
  absl::StatusOr<DistillRun> held_out = CalibrationRows(**engine, distill.num_heads);
  if (!held_out.ok()) return Fail(held_out.status());

  // 2. Training.
  TrainerOptions options;
  options.num_heads = distill.num_heads;
  options.num_layers = absl::GetFlag(FLAGS_num_layers);
  options.share_lm_head = absl::GetFlag(FLAGS_share_lm_head);
  options.batch_size = absl::GetFlag(FLAGS_batch_size);
  options.epochs = absl::GetFlag(FLAGS_epochs);
  options.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  options.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  options.seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, (*engine)->config(), *classifier);
  if (!trainer.ok()) return Fail(trainer.status());
  absl::StatusOr<std::vector<std::vector<double>>> before =
      EvaluateTopK(trainer->heads(), *classifier, held_out->set, 10);
  if (!before.ok()) return Fail(before.status());
  std::string checkpoint = absl::GetFlag(FLAGS_checkpoint);
  if (checkpoint.empty()) checkpoint = out + ".ckpt";
  ProgressBar bar("training");
  const auto train_start = std::chrono::steady_clock::now();
  TrainRunOptions run;
  run.on_progress = [&](const TrainProgress& p) {
    std::string top1;
    for (double a : p.top1) absl::StrAppend(&top1, top1.empty() ? "" : " ", absl::StrFormat("%.2f", a));
    bar.Update(p.step, p.total_steps, p.tokens_per_second, "tokens/s",
               absl::StrFormat("epoch %d loss %.3f top-1 %s", p.epoch + 1, p.loss, top1));
  };
  run.checkpoint_path = checkpoint;
  run.checkpoint_every_steps = 200;
  run.stop_requested = &g_stop_requested;  // Ctrl-C: checkpoint, then stop; rerun to resume
  std::signal(SIGINT, [](int) { g_stop_requested = true; });
  std::signal(SIGTERM, [](int) { g_stop_requested = true; });
  absl::Status trained = trainer->Train(data->set, run);
  bar.Finish();
  if (!trained.ok()) {
    if (trained.code() == absl::StatusCode::kCancelled) {
      std::fprintf(stderr, "stopped; the checkpoint %s resumes this run\n", checkpoint.c_str());
    }
    return Fail(trained);
  }
  const double train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();

  // 3. The heads (with their draft vocabulary), their settings, their calibration.
  MedusaHeadsWeights heads = trainer->heads();
  const double coverage = absl::GetFlag(FLAGS_draft_coverage);
  if (coverage > 0) {
    heads.draft_vocab = DraftVocabOf(data->set, (*engine)->config().vocab_size, coverage,
                                     absl::GetFlag(FLAGS_draft_min_tokens));
    std::fprintf(stderr, "draft vocabulary: %zu tokens cover %.2f%% of the answers' tokens\n",
                 heads.draft_vocab.size(), 100 * coverage);
  }
  absl::StatusOr<std::vector<std::vector<double>>> after = EvaluateTopK(heads, *classifier, held_out->set, 10);
  if (!after.ok()) return Fail(after.status());
  PrintAccuracies("before training,", *before);
  PrintAccuracies("after training, ", *after);
  nlohmann::json settings = {
      {"tool", "medusa train"},
      {"data", data_settings},
      {"training", {{"num_heads", options.num_heads}, {"num_layers", options.num_layers},
                    {"share_lm_head", options.share_lm_head}, {"epochs", options.epochs},
                    {"batch_size", options.batch_size}, {"lr", options.lr},
                    {"weight_decay", options.weight_decay}, {"seed", options.seed},
                    {"draft_coverage", coverage}, {"draft_vocab_size", heads.draft_vocab.size()},
                    {"loss", "sum_k 0.8^k CE(head_k(h_t), x[t+k+1]), k = 1..K"}}},
      {"cost", {{"distill_prompts", data->prompts}, {"distill_tokens", data->tokens},
                {"distill_seconds", data->seconds}, {"train_rows", data->set.rows()},
                {"train_row_epochs", static_cast<int64_t>(data->set.rows()) * options.epochs},
                {"train_seconds", train_seconds}}},
  };
  if (absl::Status s = SaveMedusaHeads(out, heads, settings, *dtype); !s.ok()) return Fail(s);
  if (absl::Status s = WriteJson(Beside(out, ".json"), settings); !s.ok()) return Fail(s);
  const nlohmann::json calibration = {
      {"heads", std::filesystem::path(out).filename().string()},
      {"prompts", std::filesystem::path(absl::GetFlag(FLAGS_calibration_prompts)).filename().string()},
      {"prompt_count", held_out->prompts},
      {"rows", held_out->set.rows()},
      {"topk_accuracy", Accuracies(*after)},
      {"topk_accuracy_before_training", Accuracies(*before)},
  };
  std::string calibration_path = absl::GetFlag(FLAGS_calibration_out);
  if (calibration_path.empty()) calibration_path = CalibrationPathFor(out);
  if (absl::Status s = WriteJson(calibration_path, calibration); !s.ok()) return Fail(s);
  std::fprintf(stderr, "wrote %s, %s and %s\n", out.c_str(), Beside(out, ".json").c_str(),
               calibration_path.c_str());
  std::error_code ignored;
  std::filesystem::remove(checkpoint, ignored);  // finished: a later run starts afresh
  return 0;
}

int RunCalibrate() {
  const std::string heads_path = absl::GetFlag(FLAGS_heads);
  if (heads_path.empty()) return Fail(absl::InvalidArgumentError("--heads is required"));
  absl::StatusOr<std::unique_ptr<Engine>> engine = OpenEngine();
  if (!engine.ok()) return Fail(engine.status());
  absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(heads_path, (*engine)->config());
  if (!heads.ok()) return Fail(heads.status());
  absl::StatusOr<std::vector<float>> classifier = LoadClassifier(absl::GetFlag(FLAGS_model));
  if (!classifier.ok()) return Fail(classifier.status());
  absl::StatusOr<DistillRun> held_out = CalibrationRows(**engine, heads->num_heads);
  if (!held_out.ok()) return Fail(held_out.status());
  absl::StatusOr<std::vector<std::vector<double>>> topk = EvaluateTopK(*heads, *classifier, held_out->set, 10);
  if (!topk.ok()) return Fail(topk.status());
  PrintAccuracies("", *topk);
  const nlohmann::json calibration = {
      {"heads", std::filesystem::path(heads_path).filename().string()},
      {"prompts", std::filesystem::path(absl::GetFlag(FLAGS_calibration_prompts)).filename().string()},
      {"prompt_count", held_out->prompts},
      {"rows", held_out->set.rows()},
      {"topk_accuracy", Accuracies(*topk)},
  };
  std::string path = absl::GetFlag(FLAGS_calibration_out);
  if (path.empty()) path = CalibrationPathFor(heads_path);
  if (absl::Status s = WriteJson(path, calibration); !s.ok()) return Fail(s);
  std::fprintf(stderr, "wrote %s\n", path.c_str());
  return 0;
}

}  // namespace medusa::tools
