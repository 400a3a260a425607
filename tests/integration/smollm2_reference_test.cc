// SmolLM2-135M-Instruct against Hugging Face transformers running the same GGUF
// (tests/reference/make_smollm2_reference.py made the fixture): logits at every
// position of every prompt, and 64-token greedy continuations token for token.

#include <cmath>
#include <fstream>

#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::kSmolModel;
using testing::SourcePath;

class SmolLM2ReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(SourcePath("tests/fixtures/smollm2_reference.json"));
    ASSERT_TRUE(in) << "missing tests/fixtures/smollm2_reference.json";
    fixture_ = new nlohmann::json(nlohmann::json::parse(in));
    if (!std::filesystem::exists(kSmolModel)) return;
    EngineOptions options;
    options.model_path = kSmolModel;
    options.kv_cache_bytes = 128ll << 20;
    // transformers computes in float32 on the dequantized weights: so does the reference mode.
    options.backend.weights = "f32";
    auto engine = Engine::Create(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = engine->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete fixture_;
    engine_ = nullptr;
    fixture_ = nullptr;
  }
  void SetUp() override {
    ASSERT_MODEL_PRESENT(kSmolModel);
    ASSERT_NE(engine_, nullptr);
  }

  // Logits at every position of a prompt, from one prefill pass.
  static std::vector<float> AllLogits(const std::vector<int32_t>& ids) {
    kv::SequenceKv seq = engine_->NewSequence();
    EXPECT_TRUE(seq.Reserve(static_cast<int>(ids.size())).ok());
    kernels::ForwardBatch batch;
    batch.block_tables.push_back(seq.block_table());
    for (int i = 0; i < static_cast<int>(ids.size()); ++i) {
      batch.tokens.push_back({.token = ids[i], .position = i, .seq = 0, .kv_index = i, .attend_prefix = i + 1});
      batch.output_rows.push_back(i);
    }
    kernels::ForwardResult result;
    absl::Status s = engine_->backend().Forward(batch, &result);
    EXPECT_TRUE(s.ok()) << s;
    return result.logits;
  }

  static nlohmann::json* fixture_;
  static Engine* engine_;
};
nlohmann::json* SmolLM2ReferenceTest::fixture_ = nullptr;
Engine* SmolLM2ReferenceTest::engine_ = nullptr;

TEST_F(SmolLM2ReferenceTest, ConfigMatchesTransformers) {
  const nlohmann::json& c = (*fixture_)["config"];
  const ModelConfig& m = engine_->config();
  EXPECT_EQ(m.vocab_size, c["vocab_size"]);
  EXPECT_EQ(m.dim, c["hidden_size"]);
  EXPECT_EQ(m.n_layers, c["num_layers"]);
  EXPECT_EQ(m.n_heads, c["num_heads"]);
  EXPECT_EQ(m.n_kv_heads, c["num_kv_heads"]);
  EXPECT_EQ(m.head_dim, c["head_dim"]);
  EXPECT_EQ(m.hidden_dim, c["intermediate_size"]);
  EXPECT_FLOAT_EQ(m.rope_theta, c["rope_theta"].get<float>());
  EXPECT_EQ(m.tied_classifier, c["tie_word_embeddings"].get<bool>());
}

// Max-abs logit difference, relative to the fixture's logit scale, and the same
// top-1 at every position (a near-tie within the tolerance may swap).
TEST_F(SmolLM2ReferenceTest, LogitsMatchAtEveryPosition) {
  const std::vector<int32_t> sampled = (*fixture_)["sampled_ids"];
  const double scale = (*fixture_)["max_abs_logit"];
  const double tolerance = 2.5e-4 * scale;  // float32 vs float32 in other summation orders
  const int vocab = engine_->config().vocab_size;
  double worst = 0;
  int rows = 0;
  for (const nlohmann::json& prompt : (*fixture_)["prompts"]) {
    const std::vector<int32_t> ids = prompt["input_ids"];
    std::vector<float> logits = AllLogits(ids);
    ASSERT_EQ(logits.size(), ids.size() * vocab);
    for (size_t p = 0; p < ids.size(); ++p) {
      const nlohmann::json& expect = prompt["positions"][p];
      const float* row = &logits[p * vocab];
      auto check = [&](int32_t id, double want) {
        double diff = std::abs(row[id] - want);
        worst = std::max(worst, diff);
        EXPECT_LE(diff, tolerance) << prompt["text"] << " position " << p << " id " << id;
      };
      for (size_t k = 0; k < sampled.size(); ++k) check(sampled[k], expect["sampled_logits"][k]);
      const std::vector<int32_t> top_ids = expect["top_ids"];
      const std::vector<double> top_logits = expect["top_logits"];
      for (size_t k = 0; k < top_ids.size(); ++k) check(top_ids[k], top_logits[k]);
      int32_t argmax = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      if (argmax != top_ids[0]) {
        EXPECT_LE(top_logits[0] - row[argmax], 2 * tolerance)
            << "top-1 differs beyond a near-tie at position " << p << " of " << prompt["text"];
      }
      double lse_ref = expect["logsumexp"];
      double m = *std::max_element(row, row + vocab), sum = 0;
      for (int i = 0; i < vocab; ++i) sum += std::exp(row[i] - m);
      EXPECT_NEAR(m + std::log(sum), lse_ref, tolerance);
      ++rows;
    }
  }
  EXPECT_GE(rows, 50);
  std::printf("max |logit - transformers| = %.5f over %d positions (logit scale %.1f)\n", worst, rows, scale);
}

TEST_F(SmolLM2ReferenceTest, GreedyContinuationsMatchTokenForToken) {
  for (const nlohmann::json& prompt : (*fixture_)["prompts"]) {
    GenerationRequest request;
    request.prompt_ids = prompt["input_ids"].get<std::vector<int32_t>>();
    request.max_tokens = 64;
    request.ignore_eos = true;  // the fixture's generate ran with eos_token_id=None
    auto result = Generate(*engine_, request);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->token_ids, prompt["greedy_ids"].get<std::vector<int32_t>>()) << prompt["text"];
  }
  EXPECT_EQ(engine_->kv_allocator().num_used(), 0);
}

}  // namespace
}  // namespace medusa
