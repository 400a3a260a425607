// stories260K's logits against an independent float64 NumPy forward
// (tests/reference/llama2c_numpy.py), whose greedy ids reproduce llama2.c's
// golden output: every logit of the first 32 positions, and the 200 greedy ids.

#include <cmath>
#include <fstream>

#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::kStoriesModel;
using testing::kStoriesTokenizer;
using testing::SourcePath;

TEST(Stories260KReferenceTest, LogitsMatchFloat64ReferenceAtEveryPosition) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  std::ifstream in(SourcePath("tests/fixtures/stories260k_reference.json"));
  ASSERT_TRUE(in);
  const nlohmann::json fixture = nlohmann::json::parse(in);
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 8 << 20;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();

  const std::vector<int32_t> ids = fixture["input_ids"];
  kv::SequenceKv seq = (*engine)->NewSequence();
  ASSERT_TRUE(seq.Reserve(static_cast<int>(ids.size())).ok());
  kernels::ForwardBatch batch;
  batch.block_tables.push_back(seq.block_table());
  for (int i = 0; i < static_cast<int>(ids.size()); ++i) {
    batch.tokens.push_back({.token = ids[i], .position = i, .seq = 0, .kv_index = i, .attend_prefix = i + 1});
    batch.output_rows.push_back(i);
  }
  kernels::ForwardResult result;
  ASSERT_TRUE((*engine)->backend().Forward(batch, &result).ok());
  const int vocab = (*engine)->config().vocab_size;
  double worst = 0;
  for (size_t p = 0; p < ids.size(); ++p) {
    const std::vector<double> expect = fixture["logits"][p];
    ASSERT_EQ(expect.size(), static_cast<size_t>(vocab));
    for (int v = 0; v < vocab; ++v) worst = std::max(worst, std::abs(result.logits[p * vocab + v] - expect[v]));
  }
  EXPECT_LT(worst, 1e-4) << "float32 engine vs float64 reference";
  std::printf("max |logit - float64 reference| = %.2e\n", worst);

  GenerationRequest request;
  request.prompt_ids = {1};
  request.max_tokens = 200;
  request.ignore_eos = true;
  auto greedy = Generate(**engine, request);
  ASSERT_TRUE(greedy.ok());
  EXPECT_EQ(greedy->token_ids, fixture["greedy_ids"].get<std::vector<int32_t>>());
}

}  // namespace
}  // namespace medusa
