// Medusa-1 training end to end on stories260K, in seconds: the model writes its own
// training data, the trainer fits four heads, their held-out accuracy rises far above
// the start, and decoding with them accelerates while greedy output stays exactly
// the plain output. Then `medusa train` as a user runs it.

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/generate/generator.h"
#include "engine/medusa/heads_file.h"
#include "engine/model/loader.h"
#include "engine/model/safetensors.h"
#include "engine/train/heads_evaluation.h"
#include "engine/train/heads_trainer.h"
#include "engine/train/self_distill.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::kStoriesModel;
using testing::kStoriesTokenizer;

std::unique_ptr<Engine> StoriesEngine() {
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 32ll << 20;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// Story openings the model writes itself: BOS and 6 sampled tokens, one seed each.
std::vector<std::vector<int32_t>> SampledOpenings(Engine& engine, int first_seed, int count) {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < count; ++i) {
    GenerationRequest request;
    request.prompt_ids = {engine.tokenizer().bos_id()};
    request.max_tokens = 6;
    request.ignore_eos = true;
    request.use_medusa = false;
    request.sampling.temperature = 1.0f;
    request.sampling.seed = static_cast<uint64_t>(first_seed + i);
    absl::StatusOr<GenerationResult> opening = Generate(engine, request);
    EXPECT_TRUE(opening.ok()) << opening.status();
    std::vector<int32_t> prompt = request.prompt_ids;
    prompt.insert(prompt.end(), opening->token_ids.begin(), opening->token_ids.end());
    prompts.push_back(std::move(prompt));
  }
  return prompts;
}

TEST(MedusaTrainingTest, TrainedHeadsAccelerateStories260KLosslessly) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  SelfDistillOptions distill;
  distill.num_heads = 4;
  distill.max_new_tokens = 128;
  absl::StatusOr<DistillSet> train = SelfDistill(*engine, SampledOpenings(*engine, 0, 300), distill);
  absl::StatusOr<DistillSet> held_out = SelfDistill(*engine, SampledOpenings(*engine, 100000, 40), distill);
  ASSERT_TRUE(train.ok() && held_out.ok());
  ASSERT_GT(train->rows(), 10000);

  absl::StatusOr<LoadedModel> model = LoadModel(kStoriesModel);
  ASSERT_TRUE(model.ok());
  const std::vector<float>& classifier =
      model->weights.classifier.empty() ? model->weights.token_embedding.values : model->weights.classifier.values;
  TrainerOptions options;
  options.num_heads = 4;
  options.share_lm_head = false;
  options.epochs = 3;
  options.lr = 3e-3f;
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, engine->config(), classifier);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto before = EvaluateTopK(trainer->heads(), classifier, *held_out, 10);
  ASSERT_TRUE(trainer->Train(*train).ok());
  auto after = EvaluateTopK(trainer->heads(), classifier, *held_out, 10);
  ASSERT_TRUE(before.ok() && after.ok());
  for (int k = 0; k < 4; ++k) {
    std::printf("head %d: held-out top-1 %.3f -> %.3f, top-5 %.3f -> %.3f\n", k, (*before)[k][0], (*after)[k][0],
                (*before)[k][4], (*after)[k][4]);
    EXPECT_GT((*after)[k][0], (*before)[k][0] + 0.15) << "head " << k;
    EXPECT_GT((*after)[k][0], 3 * (*before)[k][0]) << "head " << k;
  }

  // Plain outputs once, then each tree against them.
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int32_t>> plain;
  for (const std::vector<int32_t>& prompt : SampledOpenings(*engine, 200000, 50)) {
    GenerationRequest request;
    request.prompt_ids = prompt;
    request.max_tokens = 150;
    request.use_medusa = false;
    absl::StatusOr<GenerationResult> result = Generate(*engine, request);
    ASSERT_TRUE(result.ok());
    request.use_medusa = true;
    requests.push_back(request);
    plain.push_back(result->token_ids);
  }
  for (const std::string tree_name : {"chain", "mc_sim_7b_63"}) {
    absl::StatusOr<MedusaTree> tree = LoadTree(tree_name, 4);
    ASSERT_TRUE(tree.ok());
    ASSERT_TRUE(engine->SetMedusa(trainer->heads(), *tree).ok());
    int tokens = 0, steps = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      absl::StatusOr<GenerationResult> medusa = Generate(*engine, requests[i]);
      ASSERT_TRUE(medusa.ok());
      ASSERT_EQ(medusa->token_ids, plain[i]) << tree_name << ", prompt " << i;
      tokens += medusa->new_tokens();
      steps += medusa->steps;
    }
    const double acceleration = double(tokens) / steps;
    std::printf("trained heads, %s: acceleration %.3f over %d tokens\n", tree_name.c_str(), acceleration, tokens);
    EXPECT_GT(acceleration, 1.5) << tree_name;
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

// The command a user runs: heads, settings and calibration files, and heads the
// engine loads; a second run with the same output resumes from the data cache.
TEST(MedusaTrainingTest, TrainCommandWritesHeadsSettingsAndCalibration) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string dir = ::testing::TempDir() + "/train_cmd";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string seeds = dir + "/seeds.json";
  std::ofstream(seeds) << R"(["Once upon a time", "The dog ran", "Lily had a", "One day, Tom", "The sun"])";
  const std::string out = dir + "/heads.safetensors";
  const std::string command = testing::BinaryPath("bin/medusa") + " train --model " + kStoriesModel +
                              " --tokenizer " + kStoriesTokenizer + " --seed-prompts " + seeds +
                              " --calibration-prompts " + seeds + " --num-heads 3 --gen-tokens 64 --out " + out +
                              " --epochs 2 --draft-coverage 0.9 --draft-min-tokens 16 2>&1";
  for (int run = 0; run < 2; ++run) {
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string log;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) log.append(buf, n);
    ASSERT_EQ(pclose(pipe), 0) << log;
    if (run == 1) {
      EXPECT_NE(log.find("rows from"), std::string::npos) << log;  // the data cache
    }
  }
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(out, engine->config());
  ASSERT_TRUE(heads.ok()) << heads.status();
  EXPECT_EQ(heads->num_heads, 3);
  EXPECT_TRUE(heads->has_projection());  // their own projections unless --share-lm-head
  // The draft vocabulary: the tokens making up 90% of the model's answers, at least 16.
  EXPECT_GE(heads->draft_vocab.size(), 16u);
  EXPECT_LT(heads->draft_vocab.size(), static_cast<size_t>(engine->config().vocab_size));
  nlohmann::json settings = nlohmann::json::parse(std::ifstream(dir + "/heads.json"));
  EXPECT_EQ(settings["training"]["draft_vocab_size"].get<size_t>(), heads->draft_vocab.size());
  EXPECT_EQ(settings["training"]["num_heads"], 3);
  EXPECT_GT(settings["cost"]["train_rows"].get<int>(), 0);
  nlohmann::json calibration = nlohmann::json::parse(std::ifstream(dir + "/heads.calibration.json"));
  ASSERT_EQ(calibration["topk_accuracy"].size(), 3u);
  // Where the accuracies were measured: the backend and its weights (llama2.c files hold float32).
  // Each head's temperature, fitted on held-out rows and judged on others.
  ASSERT_EQ(calibration["temperature"].size(), 3u);
  for (const auto& t : calibration["temperature"]) EXPECT_GT(t.get<double>(), 0.0);
  for (const char* key : {"fit_rows", "eval_rows", "nll_before", "nll_after", "top1_ece_before", "top1_ece_after"}) {
    EXPECT_EQ(calibration["temperature_fit"][key].size(), 3u) << key;
  }
  const std::string measured_on = calibration["measured_on"].get<std::string>();
  EXPECT_EQ(measured_on.rfind("cpu ", 0), 0u) << measured_on;
  EXPECT_NE(measured_on.find(", f32 weights, "), std::string::npos) << measured_on;
  for (const auto& head : calibration["topk_accuracy"]) {
    ASSERT_EQ(head.size(), 10u);
    for (size_t i = 1; i < head.size(); ++i) EXPECT_GE(head[i].get<double>(), head[i - 1].get<double>());
  }
  EXPECT_FALSE(std::filesystem::exists(out + ".ckpt"));  // removed once training finished
}

// `medusa train --head-type hydra`: Hydra heads (here with half of the teacher objective) that
// the engine loads as such and that leave greedy output unchanged; an unknown head type is
// refused before any work.
TEST(MedusaTrainingTest, TrainCommandMakesHydraHeads) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string dir = ::testing::TempDir() + "/train_hydra";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string seeds = dir + "/seeds.json";
  std::ofstream(seeds) << R"(["Once upon a time", "The dog ran", "Lily had a", "One day, Tom", "The sun"])";
  const std::string out = dir + "/hydra.safetensors";
  auto run = [&](const std::string& head_type, std::string* log) {
    const std::string command =
        testing::BinaryPath("bin/medusa") + " train --model " + kStoriesModel + " --tokenizer " + kStoriesTokenizer +
        " --seed-prompts " + seeds + " --calibration-prompts " + seeds + " --num-heads 3 --gen-tokens 64 --out " + out +
        " --share-lm-head --num-layers 2 --answers-per-prompt 2 --teacher-weight 0.5 --head-type " + head_type +
        " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    if (pipe == nullptr) return -1;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) log->append(buf, n);
    return pclose(pipe);
  };
  std::string log;
  EXPECT_NE(run("eagle", &log), 0);
  EXPECT_NE(log.find("--head-type must be medusa or hydra, got 'eagle'"), std::string::npos) << log;
  log.clear();
  ASSERT_EQ(run("hydra", &log), 0) << log;
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(out, engine->config());
  ASSERT_TRUE(heads.ok()) << heads.status();
  EXPECT_EQ(heads->kind, HeadKind::kHydra);
  nlohmann::json settings = nlohmann::json::parse(std::ifstream(dir + "/hydra.json"));
  EXPECT_EQ(settings["training"]["head_type"], "hydra");
  EXPECT_EQ(settings["training"]["teacher_weight"], 0.5);
  EXPECT_EQ(settings["training"]["loss"],
            "sum_k 0.8^k CE(head_k(h_t, E(x[t+1..t+k])), 0.5 onehot(x[t+k+1]) + 0.5 softmax(C h_{t+k})), k = 1..K");
  // A second, sampled answer to every prompt (its own seeds, its own cache), trained on too.
  ASSERT_EQ(settings["data"]["extra_answers"].size(), 1u);
  EXPECT_NEAR(settings["data"]["extra_answers"][0]["gen_temperature"].get<double>(), 0.7, 1e-6);
  EXPECT_EQ(settings["data"]["extra_answers"][0]["seed"], 5);  // --seed 0 plus one per prompt of the first answer
  int64_t cached_rows = 0;
  for (const char* cache : {"/hydra.distill.safetensors", "/hydra.distill.answer1.safetensors"}) {
    absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(dir + cache);
    ASSERT_TRUE(file.ok()) << cache << ": " << file.status();
    cached_rows += (*file)->FindTensor("hidden")->shape[0];
  }
  EXPECT_EQ(settings["cost"]["train_rows"].get<int64_t>(), cached_rows);
  nlohmann::json calibration = nlohmann::json::parse(std::ifstream(dir + "/hydra.calibration.json"));
  ASSERT_EQ(calibration["topk_accuracy"].size(), 3u);
  absl::StatusOr<MedusaTree> tree = LoadTree("mc_sim_7b_63", 3);
  ASSERT_TRUE(tree.ok());
  ASSERT_TRUE(engine->SetMedusa(*std::move(heads), *tree).ok());
  engine->SetDynamicTrees(8, {});
  for (const std::vector<int32_t>& prompt : SampledOpenings(*engine, 300000, 5)) {
    GenerationRequest request;
    request.prompt_ids = prompt;
    request.max_tokens = 60;
    request.use_medusa = false;
    absl::StatusOr<GenerationResult> plain = Generate(*engine, request);
    ASSERT_TRUE(plain.ok());
    request.use_medusa = true;
    absl::StatusOr<GenerationResult> hydra = Generate(*engine, request);
    ASSERT_TRUE(hydra.ok()) << hydra.status();
    EXPECT_EQ(hydra->token_ids, plain->token_ids);
  }
}

}  // namespace
}  // namespace medusa
