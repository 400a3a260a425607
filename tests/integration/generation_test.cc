// Generation end to end on real models: llama2.c's golden output, streaming,
// stop rules, seeds, request validation, KV exhaustion and KV leaks.

#include "engine/generate/generator.h"

#include <fstream>
#include <sstream>

#include "engine/engine.h"
#include "gtest/gtest.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::kStoriesGolden;
using testing::kStoriesModel;
using testing::kStoriesTokenizer;

std::unique_ptr<Engine> StoriesEngine(int kv_block_size = 16, int prefill_chunk = 512,
                                      int64_t kv_cache_bytes = 64ll << 20) {
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_block_size = kv_block_size;
  options.prefill_chunk = prefill_chunk;
  options.kv_cache_bytes = kv_cache_bytes;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

GenerationRequest GreedyFromBos(int max_tokens) {
  GenerationRequest request;
  request.prompt_ids = {1};  // BOS
  request.max_tokens = max_tokens;
  request.ignore_eos = true;  // llama2.c's run.c stops only at BOS
  return request;
}

// llama2.c's `run stories260K.bin -z tok512.bin -t 0.0 -n 200`: forward passes
// at positions 0..199 from BOS, each printing the greedy token. Its output is the
// golden text, byte for byte.
TEST(GenerationTest, Stories260KGreedyMatchesLlama2cGoldenOutput) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  ASSERT_MODEL_PRESENT(kStoriesGolden);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<GenerationResult> result = Generate(*engine, GreedyFromBos(200));
  ASSERT_TRUE(result.ok()) << result.status();
  // run.c stops early if the model emits BOS; it does not here (the check keeps the test honest).
  ASSERT_EQ(std::count(result->token_ids.begin(), result->token_ids.end(), 1), 0);
  EXPECT_EQ(result->text, ReadFile(kStoriesGolden));
  EXPECT_EQ(result->new_tokens(), 200);
  EXPECT_EQ(result->steps, 200);
  EXPECT_EQ(result->finish_reason, FinishReason::kLength);
  EXPECT_EQ(engine->kv_allocator().num_used(), 0) << "KV blocks leaked";
}

TEST(GenerationTest, StreamedTextEqualsDecodedText) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  std::string streamed;
  std::vector<int32_t> streamed_ids;
  int chunks = 0;
  auto result = Generate(*engine, GreedyFromBos(120),
                              [&](absl::Span<const int32_t> ids, std::string_view text) {
                                streamed += text;
                                streamed_ids.insert(streamed_ids.end(), ids.begin(), ids.end());
                                ++chunks;
                              });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(streamed, result->text);
  EXPECT_EQ(streamed_ids, result->token_ids);
  EXPECT_GT(chunks, 50) << "text should stream token by token";
  std::vector<int32_t> all = {1};
  all.insert(all.end(), result->token_ids.begin(), result->token_ids.end());
  EXPECT_EQ(engine->tokenizer().Decode(all), result->text);
}

// The first generated word keeps its leading space after a text prompt (it is
// dropped only right after BOS), so prompt + completion reads as one text.
TEST(GenerationTest, CompletionContinuesThePromptText) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  GenerationRequest request;
  request.prompt_ids = engine->tokenizer().Encode("Once upon a time", true);
  request.max_tokens = 30;
  auto result = Generate(*engine, request);
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<int32_t> all = request.prompt_ids;
  all.insert(all.end(), result->token_ids.begin(), result->token_ids.end());
  EXPECT_EQ(engine->tokenizer().Decode(all), "Once upon a time" + result->text);
}

TEST(GenerationTest, ChunkedPrefillAndBlockSizeDoNotChangeOutput) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto base = StoriesEngine();
  ASSERT_NE(base, nullptr);
  GenerationRequest request;
  request.prompt_ids = base->tokenizer().Encode("Once upon a time, a little dog named Max", true);
  request.max_tokens = 60;
  auto expected = Generate(*base, request);
  ASSERT_TRUE(expected.ok()) << expected.status();
  for (auto [chunk, block] : {std::pair{1, 16}, {3, 1}, {5, 7}, {512, 64}}) {
    auto engine = StoriesEngine(block, chunk);
    ASSERT_NE(engine, nullptr);
    auto got = Generate(*engine, request);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->token_ids, expected->token_ids) << "chunk " << chunk << ", block " << block;
    EXPECT_EQ(engine->kv_allocator().num_used(), 0);
  }
}

TEST(GenerationTest, StopStringEndsGenerationAndIsNotReturned) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  auto full = Generate(*engine, GreedyFromBos(100));
  ASSERT_TRUE(full.ok());
  const std::string stop = "Lily's mom";
  size_t at = full->text.find(stop);
  ASSERT_NE(at, std::string::npos) << full->text;

  GenerationRequest request = GreedyFromBos(100);
  request.stop_strings = {"never appears", stop};
  std::string streamed;
  auto result = Generate(*engine, request, [&](auto, std::string_view text) { streamed += text; });
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->text, full->text.substr(0, at));
  EXPECT_EQ(streamed, result->text) << "no part of a stop string may be streamed";
  EXPECT_EQ(result->finish_reason, FinishReason::kStop);
  EXPECT_LT(result->new_tokens(), full->new_tokens());
}

// stories260K was trained on stories delimited by BOS (llama2.c's run.c stops
// there); a sampled story ends within the context.
TEST(GenerationTest, EndOfSequenceStopsGeneration) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  // Find where a story emits a stop token, then check generation stops there.
  GenerationRequest request = GreedyFromBos(500);
  request.sampling = {.temperature = 1.0f, .seed = 3};
  auto full = Generate(*engine, request);
  ASSERT_TRUE(full.ok());
  std::vector<int32_t> stop_ids = StopTokenIds(engine->tokenizer());
  auto eos = std::find_first_of(full->token_ids.begin(), full->token_ids.end(), stop_ids.begin(),
                                stop_ids.end());
  ASSERT_NE(eos, full->token_ids.end()) << "the sampled story should end within 500 tokens";
  request.ignore_eos = false;
  auto stopped = Generate(*engine, request);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped->token_ids, std::vector<int32_t>(full->token_ids.begin(), eos + 1));
}

TEST(GenerationTest, MaxTokensAndContextBoundTheOutput) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  auto r = Generate(*engine, GreedyFromBos(7));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->new_tokens(), 7);
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
  // A long prompt near the 512-token context: generation stops at the context.
  GenerationRequest request = GreedyFromBos(100);
  request.prompt_ids.assign(500, 300);
  r = Generate(*engine, request);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->new_tokens(), 12);
  EXPECT_EQ(r->finish_reason, FinishReason::kLength);
}

TEST(GenerationTest, SameSeedSameTextDifferentSeedDifferentText) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  auto sample = [&](uint64_t seed) {
    GenerationRequest request = GreedyFromBos(80);
    request.sampling = {.temperature = 1.0f, .top_k = 40, .top_p = 0.95f, .seed = seed};
    auto r = Generate(*engine, request);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->token_ids : std::vector<int32_t>{};
  };
  EXPECT_EQ(sample(11), sample(11));
  EXPECT_NE(sample(11), sample(12));
}

TEST(GenerationTest, InvalidRequestsAreRejectedWithTheFieldNamed) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = StoriesEngine();
  ASSERT_NE(engine, nullptr);
  struct Case {
    std::string what;
    GenerationRequest request;
    std::string expect_in_message;
  };
  std::vector<Case> cases;
  cases.push_back({"empty prompt", GreedyFromBos(5), "empty"});
  cases.back().request.prompt_ids.clear();
  cases.push_back({"id outside vocab", GreedyFromBos(5), "vocabulary"});
  cases.back().request.prompt_ids = {1, 512};
  cases.push_back({"negative id", GreedyFromBos(5), "vocabulary"});
  cases.back().request.prompt_ids = {-3};
  cases.push_back({"prompt fills the context", GreedyFromBos(5), "context"});
  cases.back().request.prompt_ids.assign(512, 5);
  cases.push_back({"max_tokens 0", GreedyFromBos(0), "max_tokens"});
  cases.push_back({"NaN temperature", GreedyFromBos(5), "temperature"});
  cases.back().request.sampling.temperature = NAN;
  cases.push_back({"top_p 0", GreedyFromBos(5), "top_p"});
  cases.back().request.sampling.top_p = 0;
  for (const Case& c : cases) {
    auto r = Generate(*engine, c.request);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(r.status().message().find(c.expect_in_message), std::string::npos)
        << c.what << ": " << r.status();
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

TEST(GenerationTest, KvExhaustionIsACleanErrorAndLeaksNothing) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto probe = StoriesEngine();
  ASSERT_NE(probe, nullptr);
  const int64_t block_bytes = probe->backend().KvBytesPerBlock(16);
  // Room for 4 blocks = 64 tokens.
  auto engine = StoriesEngine(16, 512, 4 * block_bytes);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->kv_allocator().num_blocks(), 4);
  auto r = Generate(*engine, GreedyFromBos(200));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
  // The engine keeps working for requests that fit.
  auto ok = Generate(*engine, GreedyFromBos(40));
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto reference = Generate(*probe, GreedyFromBos(40));
  ASSERT_TRUE(reference.ok());
  EXPECT_EQ(ok->token_ids, reference->token_ids);
}

TEST(GenerationTest, MissingOrBrokenModelFilesGiveClearErrors) {
  EngineOptions options;
  options.model_path = "/nonexistent/model.gguf";
  auto missing = Engine::Create(options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/model.gguf"), std::string::npos)
      << missing.status();
  ASSERT_MODEL_PRESENT(kStoriesModel);
  options.model_path = kStoriesModel;
  options.tokenizer_path = "/nonexistent/tok.bin";
  auto no_tokenizer = Engine::Create(options);
  ASSERT_FALSE(no_tokenizer.ok());
  EXPECT_NE(no_tokenizer.status().message().find("/nonexistent/tok.bin"), std::string::npos)
      << no_tokenizer.status();
}

}  // namespace
}  // namespace medusa
