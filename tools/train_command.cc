// `medusa train`: Medusa-1 heads (Cai et al. 2024), or Hydra heads with --head-type hydra
// (Ankner et al. 2024), by self-distillation. The frozen model
// answers seed prompts itself (training_data.h), its hidden states and the tokens that
// followed become training rows, HeadsTrainer fits the heads, and the result is written in
// the reference safetensors layout with a JSON of the settings and costs beside it, then
// calibrated on held-out AlpacaEval prompts.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/engine.h"
#include "engine/medusa/heads_file.h"
#include "engine/model/safetensors.h"
#include "engine/train/draft_vocab.h"
#include "engine/train/heads_evaluation.h"
#include "engine/train/heads_trainer.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/calibration_report.h"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/progress.h"
#include "tools/training_data.h"

namespace medusa::tools {
namespace {

std::atomic<bool> g_stop_requested{false};

absl::StatusOr<safetensors::DType> HeadsDType(const std::string& name) {
  if (name == "f32") return safetensors::DType::kF32;
  if (name == "f16") return safetensors::DType::kF16;
  if (name == "bf16") return safetensors::DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("--dtype must be f32, f16 or bf16, got '", name, "'"));
}

// Where answer `answer` > 0 is cached: beside the first answer's cache, named for it.
std::string AnswerCachePath(const std::string& cache, int answer) {
  const std::string tag = absl::StrCat(".answer", answer);
  constexpr absl::string_view kExtension = ".safetensors";
  if (!absl::EndsWith(cache, kExtension)) return cache + tag;
  return absl::StrCat(cache.substr(0, cache.size() - kExtension.size()), tag, kExtension);
}

// The rows of one answer to every seed prompt, or its cache made with the same settings
// (`settings` says which): answer 0 at --gen-temperature with --seed, later ones sampled at
// --extra-answer-temperature with seeds of their own.
absl::StatusOr<DistillRun> AnswerRows(Engine& engine, const TrainCommand& command,
                                      const std::vector<std::vector<int32_t>>& prompts, int answer,
                                      nlohmann::json* settings) {
  SelfDistillOptions distill;
  distill.num_heads = command.num_heads;
  distill.max_new_tokens = command.distill.gen_tokens;
  distill.sampling.temperature =
      static_cast<float>(answer == 0 ? command.gen_temperature : command.extra_answer_temperature);
  distill.sampling.seed = command.seed + static_cast<uint64_t>(answer) * prompts.size();  // one seed per answer
  distill.concurrency = command.distill.concurrency;
  const std::string& model = command.engine.model_path;
  *settings = {
      {"model", std::filesystem::path(model).filename().string()},
      {"model_bytes", std::filesystem::file_size(model)},
      {"seed_prompts", std::filesystem::path(command.seed_prompts).filename().string()},
      {"prompts", prompts.size()},
      {"max_prompt_tokens", command.distill.max_prompt_tokens},
      {"gen_tokens", distill.max_new_tokens},
      {"gen_temperature", distill.sampling.temperature},
      {"seed", distill.sampling.seed},
      {"num_heads", distill.num_heads},
      {"rows", "hidden, next, targets"},  // what the rows hold: caches of older rows are made afresh
  };
  std::string cache =
      command.data_cache.empty() ? BesideHeads(command.out, ".distill.safetensors") : command.data_cache;
  if (cache != "none" && answer > 0) cache = AnswerCachePath(cache, answer);
  if (cache != "none") {
    if (std::optional<DistillRun> cached = LoadDistillCache(cache, *settings)) {
      std::fprintf(stderr, "self-distillation rows from %s (%d rows)\n", cache.c_str(), cached->set.rows());
      return *std::move(cached);
    }
  }
  ASSIGN_OR_RETURN(DistillRun run, Distill(engine, prompts, distill,
                                           answer == 0 ? "self-distillation" : absl::StrCat("answer ", answer + 1)));
  if (cache != "none") RETURN_IF_ERROR(SaveDistillCache(cache, run, *settings));
  return run;
}

// 1. The training rows: the model's answers to the seed prompts (--answers-per-prompt of them),
// each answer's rows cached on their own. `settings` records how they were made, for the heads' JSON.
absl::StatusOr<DistillRun> TrainingRows(Engine& engine, const TrainCommand& command, nlohmann::json* settings) {
  ASSIGN_OR_RETURN(std::vector<std::string> texts, LoadSeedPrompts(command.seed_prompts));
  const std::vector<std::vector<int32_t>> prompts =
      EncodeSeeds(engine.tokenizer(), texts, command.num_prompts, command.distill.max_prompt_tokens);
  ASSIGN_OR_RETURN(DistillRun run, AnswerRows(engine, command, prompts, 0, settings));
  for (int answer = 1; answer < command.answers_per_prompt; ++answer) {
    nlohmann::json more_settings;
    ASSIGN_OR_RETURN(DistillRun more, AnswerRows(engine, command, prompts, answer, &more_settings));
    RETURN_IF_ERROR(run.set.Append(more.set));
    run.tokens += more.tokens;
    run.seconds += more.seconds;
    run.from_cache = run.from_cache && more.from_cache;
    (*settings)["extra_answers"].push_back(
        {{"gen_temperature", more_settings["gen_temperature"]}, {"seed", more_settings["seed"]}});
  }
  return run;
}

absl::StatusOr<TrainerOptions> TrainerOptionsOf(const TrainCommand& command) {
  TrainerOptions options;
  options.num_heads = command.num_heads;
  ASSIGN_OR_RETURN(options.head_kind, HeadKindOf(command.head_type));
  options.num_layers = command.num_layers;
  options.share_lm_head = command.share_lm_head;
  options.batch_size = command.batch_size;
  options.epochs = command.epochs;
  options.lr = static_cast<float>(command.lr);
  options.weight_decay = static_cast<float>(command.weight_decay);
  options.teacher_weight = static_cast<float>(command.teacher_weight);
  options.seed = command.seed;
  return options;
}

// The objective, for the heads' JSON.
std::string LossFormula(const TrainerOptions& options) {
  const std::string head = options.head_kind == HeadKind::kHydra ? "head_k(h_t, E(x[t+1..t+k]))" : "head_k(h_t)";
  const std::string target = options.teacher_weight > 0.0f
                                 ? absl::StrFormat("%g onehot(x[t+k+1]) + %g softmax(C h_{t+k})",
                                                   1.0f - options.teacher_weight, options.teacher_weight)
                                 : "x[t+k+1]";
  return absl::StrCat("sum_k 0.8^k CE(", head, ", ", target, "), k = 1..K");
}

struct TrainedHeads {
  MedusaHeadsWeights heads;
  std::vector<std::vector<double>> topk_before;  // held-out accuracy of the untrained heads
  double seconds = 0;
};

// 2. Training, with a progress bar and a checkpoint that Ctrl-C writes and a rerun resumes.
absl::StatusOr<TrainedHeads> TrainHeads(const TrainerOptions& options, const ModelConfig& config,
                                        const BaseMatrices& base, const DistillRun& data, const DistillRun& held_out,
                                        const std::string& checkpoint) {
  ASSIGN_OR_RETURN(HeadsTrainer trainer, HeadsTrainer::Create(options, config, base.classifier, base.embedding()));
  TrainedHeads trained;
  ASSIGN_OR_RETURN(trained.topk_before,
                   EvaluateTopK(trainer.heads(), base.classifier, held_out.set, 10, 0, base.embedding()));
  ProgressBar bar("training");
  const auto start = std::chrono::steady_clock::now();
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
  const absl::Status status = trainer.Train(data.set, run);
  bar.Finish();
  if (status.code() == absl::StatusCode::kCancelled) {
    std::fprintf(stderr, "stopped; the checkpoint %s resumes this run\n", checkpoint.c_str());
  }
  RETURN_IF_ERROR(status);
  trained.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  trained.heads = trainer.heads();
  return trained;
}

// The whole command: rows, training, then the heads (with their draft vocabulary), their
// settings and their calibration.
absl::Status Train(const TrainCommand& command) {
  const std::string& out = command.out;
  ASSIGN_OR_RETURN(safetensors::DType dtype, HeadsDType(command.dtype));
  ASSIGN_OR_RETURN(TrainerOptions options, TrainerOptionsOf(command));
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(command.engine));
  ASSIGN_OR_RETURN(BaseMatrices base, LoadBaseMatrices(command.engine.model_path));
  nlohmann::json data_settings;
  ASSIGN_OR_RETURN(DistillRun data, TrainingRows(*engine, command, &data_settings));
  if (command.train_rows > 0 && command.train_rows < data.set.rows()) {
    data.set.KeepFirst(command.train_rows);
    std::fprintf(stderr, "training on the first %d rows\n", data.set.rows());
  }
  ASSIGN_OR_RETURN(DistillRun held_out,
                   CalibrationRows(*engine, command.num_heads, command.distill, command.calibration));
  std::vector<int32_t> draft_vocab;
  if (command.draft_coverage > 0) {
    draft_vocab = DraftVocabOf(data.set, engine->config().vocab_size, command.draft_coverage, command.draft_min_tokens);
    std::fprintf(stderr, "draft vocabulary: %zu tokens cover %.2f%% of the answers' tokens\n", draft_vocab.size(),
                 100 * command.draft_coverage);
  }
  // Heads sharing the classifier train over the tokens they will propose from (7.8x fewer
  // projection columns for SmolLM2); own projections over the whole vocabulary.
  if (options.share_lm_head) options.draft_vocab = draft_vocab;
  const std::string checkpoint = command.checkpoint.empty() ? out + ".ckpt" : command.checkpoint;
  ASSIGN_OR_RETURN(TrainedHeads trained, TrainHeads(options, engine->config(), base, data, held_out, checkpoint));

  MedusaHeadsWeights& heads = trained.heads;
  heads.draft_vocab = draft_vocab;
  ASSIGN_OR_RETURN(HeadsAccuracy accuracy,
                   EvaluateHeads(heads, base.classifier, held_out.set, 10, 0, base.embedding()));
  const std::vector<std::vector<double>>& after = accuracy.topk;
  PrintAccuracies("before training,", trained.topk_before);
  PrintAccuracies("after training, ", after);
  const nlohmann::json settings = {
      {"tool", "medusa train"},
      {"data", data_settings},
      {"training",
       {{"head_type", command.head_type},
        {"num_heads", options.num_heads},
        {"num_layers", options.num_layers},
        {"share_lm_head", options.share_lm_head},
        {"epochs", options.epochs},
        {"batch_size", options.batch_size},
        {"lr", options.lr},
        {"weight_decay", options.weight_decay},
        {"teacher_weight", options.teacher_weight},
        {"seed", options.seed},
        {"draft_coverage", command.draft_coverage},
        {"draft_vocab_size", heads.draft_vocab.size()},
        {"trained_over", options.draft_vocab.empty() ? "vocabulary" : "draft vocabulary"},
        {"loss", LossFormula(options)}}},
      {"cost",
       {{"distill_prompts", data.prompts},
        {"distill_tokens", data.tokens},
        {"distill_seconds", data.seconds},
        {"train_rows", data.set.rows()},
        {"train_row_epochs", static_cast<int64_t>(data.set.rows()) * options.epochs},
        {"train_seconds", trained.seconds}}},
  };
  RETURN_IF_ERROR(SaveMedusaHeads(out, heads, settings, dtype));
  RETURN_IF_ERROR(WriteJson(BesideHeads(out, ".json"), settings));
  nlohmann::json calibration =
      CalibrationJson(out, command.calibration, held_out, after, engine->backend().MachineId());
  calibration["topk_accuracy_before_training"] = trained.topk_before;
  AddChainAccuracy(accuracy, &calibration);
  ASSIGN_OR_RETURN(std::vector<HeadTemperatureFit> temperatures,
                   FitHeadTemperatures(heads, base.classifier, held_out.set, 1000, 0, base.embedding()));
  AddTemperatures(temperatures, &calibration);
  ASSIGN_OR_RETURN(std::string calibration_path, WriteCalibration(out, command.calibration, calibration));
  std::fprintf(stderr, "wrote %s, %s and %s\n", out.c_str(), BesideHeads(out, ".json").c_str(),
               calibration_path.c_str());
  std::error_code ignored;
  std::filesystem::remove(checkpoint, ignored);  // finished: a later run starts afresh
  return absl::OkStatus();
}

}  // namespace

int RunTrain(const TrainCommand& command) { return ExitCode(Train(command)); }

}  // namespace medusa::tools
