// Self-distillation data: the rows are the model's own greedy answers (the same
// tokens Generate makes), hidden states are the ones the classifier read, batching
// changes nothing, and every KV block comes back.

#include "engine/train/self_distill.h"

#include <cstdio>
#include <fstream>

#include "engine/generate/generator.h"
#include "engine/model/loader.h"
#include "gtest/gtest.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::kStoriesModel;
using testing::kStoriesTokenizer;

std::unique_ptr<Engine> StoriesEngine() {
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 8ll << 20;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

std::vector<std::vector<int32_t>> Prompts(const Engine& engine) {
  std::vector<std::vector<int32_t>> prompts;
  for (const char* text : {"Once upon a time", "The little dog", "Lily wanted to", "One day, a big",
                           "Tom and his mom", "The sun was", "A bird sat on"}) {
    prompts.push_back(engine.tokenizer().Encode(text, true, false));
  }
  return prompts;
}

TEST(SelfDistillTest, RowsAreTheModelsGreedyAnswersWithTheirHiddenStates) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  const auto prompts = Prompts(*engine);
  SelfDistillOptions options;
  options.num_heads = 3;
  options.max_new_tokens = 40;
  options.concurrency = 3;
  absl::StatusOr<DistillSet> set = SelfDistill(*engine, prompts, options);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
  ASSERT_EQ(set->dim, engine->config().dim);
  ASSERT_EQ(set->num_heads, 3);

  absl::StatusOr<LoadedModel> model = LoadModel(kStoriesModel);
  ASSERT_TRUE(model.ok());
  const std::vector<float>& classifier =
      model->weights.classifier.empty() ? model->weights.token_embedding.values : model->weights.classifier.values;
  const int dim = set->dim, vocab = engine->config().vocab_size;
  auto argmax_logit = [&](int row) {
    int best = 0;
    double best_value = -1e300;
    for (int v = 0; v < vocab; ++v) {
      double dot = 0;
      for (int d = 0; d < dim; ++d) dot += double(classifier[size_t(v) * dim + d]) * set->hidden[size_t(row) * dim + d];
      if (dot > best_value) best_value = dot, best = v;
    }
    return best;
  };

  int row = 0;
  for (const auto& prompt : prompts) {
    GenerationRequest request;
    request.prompt_ids = prompt;
    request.max_tokens = options.max_new_tokens;
    absl::StatusOr<GenerationResult> plain = Generate(*engine, request);
    ASSERT_TRUE(plain.ok());
    const std::vector<int32_t>& answer = plain->token_ids;
    // One row per answer token but the last; row r predicts answer[r] with the
    // classifier and answer[r + k + 1] with head k.
    for (size_t r = 0; r + 1 < answer.size(); ++r, ++row) {
      ASSERT_LT(row, set->rows());
      EXPECT_EQ(argmax_logit(row), answer[r]) << "row " << row;
      for (int k = 0; k < 3; ++k) {
        const size_t target = r + k + 1;
        EXPECT_EQ(set->targets[size_t(row) * 3 + k], target < answer.size() ? answer[target] : -1)
            << "row " << row << " head " << k;
      }
    }
  }
  EXPECT_EQ(row, set->rows());
}

TEST(SelfDistillTest, ConcurrencyChangesNothingAndSeedsRepeat) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  const auto prompts = Prompts(*engine);
  SelfDistillOptions options;
  options.max_new_tokens = 30;
  options.sampling.temperature = 0.8f;
  options.sampling.seed = 11;
  options.concurrency = 1;
  auto one = SelfDistill(*engine, prompts, options);
  options.concurrency = 5;
  int progress_calls = 0;
  auto five = SelfDistill(*engine, prompts, options, [&](const SelfDistillProgress& p) {
    ++progress_calls;
    EXPECT_LE(p.prompts_done, p.prompts_total);
  });
  ASSERT_TRUE(one.ok() && five.ok());
  EXPECT_GT(progress_calls, 0);
  EXPECT_EQ(one->targets, five->targets);
  ASSERT_EQ(one->hidden.size(), five->hidden.size());
  for (size_t i = 0; i < one->hidden.size(); ++i) ASSERT_NEAR(one->hidden[i], five->hidden[i], 1e-4f) << i;
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

TEST(SelfDistillTest, BadInputIsAClearError) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  SelfDistillOptions options;
  auto empty_prompt = SelfDistill(*engine, {{}}, options);
  EXPECT_EQ(empty_prompt.status().code(), absl::StatusCode::kInvalidArgument);
  auto too_long = SelfDistill(*engine, {std::vector<int32_t>(engine->config().max_seq_len, 1)}, options);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("context"), std::string::npos);
  options.concurrency = 0;
  EXPECT_EQ(SelfDistill(*engine, Prompts(*engine), options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

TEST(SeedPromptsTest, ReadsShareGptAlpacaAndStringsDroppingDuplicates) {
  const std::string path = ::testing::TempDir() + "/seeds.json";
  std::ofstream(path) << R"([
    {"id": "a", "conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello"}]},
    {"id": "b", "conversations": [{"from": "gpt", "value": "no human"}]},
    {"instruction": "Name a color."},
    "Hi there",
    "Plain string"
  ])";
  absl::StatusOr<std::vector<std::string>> prompts = LoadSeedPrompts(path);
  ASSERT_TRUE(prompts.ok()) << prompts.status();
  EXPECT_EQ(*prompts, (std::vector<std::string>{"Hi there", "Name a color.", "Plain string"}));

  std::ofstream(path) << "{\"not\": \"a list\"}";
  EXPECT_EQ(LoadSeedPrompts(path).status().code(), absl::StatusCode::kInvalidArgument);
  std::ofstream(path) << "[1, 2]";
  EXPECT_NE(LoadSeedPrompts(path).status().message().find("item 0"), std::string::npos);
  EXPECT_EQ(LoadSeedPrompts("/nonexistent/seeds.json").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(LoadSeedPrompts(testing::SourcePath("data/sharegpt_first_turns.json")).ok());
}

}  // namespace
}  // namespace medusa
