// Continuous batching through the server: 16 concurrent greedy streams (Medusa on
// and off mixed) each produce exactly what they produce alone, and the scheduler
// really decoded them together (fewer scheduler steps than sequence-steps).

#include <thread>

#include "tests/support/generate_stream.h"
#include "tests/support/loopback.h"
#include "tests/support/random_heads.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

constexpr int kStreams = 16;

const char* const kPrompts[kStreams] = {
    "Once upon a time",       "The little dog",       "Lily and Tom went",  "One day, a girl",
    "The sun was",            "A big red ball",       "Tim had a",          "In the park there",
    "Sue liked to",           "The cat sat",          "Mom said",           "Ben and his",
    "There was a tiny bird",  "The boy ran",          "Anna found a box",   "It was a cold day",
};

TEST(ServerBatchingTest, SixteenConcurrentStreamsEqualEachAlone) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  TempDir dir;
  const std::string heads = dir.file("heads.safetensors");
  WriteRandomHeads(kStoriesModel, heads);
  ServerProcess server;
  server.Start({"--model=" + kStoriesModel, "--heads=" + heads, "--threads=1", "--kv-cache-mb=32",
                "--max-running=16"},
               dir);
  ASSERT_TRUE(server.WaitServing());

  std::vector<v1::GenerateRequest> requests;
  for (int i = 0; i < kStreams; ++i) {
    v1::GenerateRequest request = GreedyRequest(kPrompts[i], 160, /*medusa=*/i % 2 == 0);
    request.set_ignore_eos(true);  // every stream runs its full length: long overlaps
    requests.push_back(request);
  }
  std::vector<std::vector<int32_t>> alone(kStreams);
  auto stub = server.Stub();
  for (int i = 0; i < kStreams; ++i) {
    StreamOutcome out = RunGenerate(*stub, requests[i]);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    alone[i] = out.ids();
    ASSERT_EQ(alone[i].size(), 160u);
  }

  const std::string before = server.Metrics();
  std::vector<StreamOutcome> together(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { together[i] = RunGenerate(*stub, requests[i]); });
  }
  for (std::thread& t : threads) t.join();
  const std::string after = server.Metrics();

  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].ids(), alone[i]) << "stream " << i << " (" << kPrompts[i] << ")";
  }
  auto delta = [&](const std::string& series) {
    return MetricValue(after, series).value_or(0) - MetricValue(before, series).value_or(0);
  };
  const double sequence_steps = delta("medusa_decode_steps_total");
  const double scheduler_steps = delta("medusa_step_duration_seconds_count{mode=\"plain\"}") +
                                 delta("medusa_step_duration_seconds_count{mode=\"medusa\"}");
  EXPECT_GT(sequence_steps, 0);
  EXPECT_LT(scheduler_steps, sequence_steps) << "no step decoded more than one sequence";
  EXPECT_EQ(delta("medusa_generated_tokens_total"), 16 * 160);
  EXPECT_EQ(MetricValue(after, "medusa_kv_cache_blocks_used"), 0.0);
}

}  // namespace
}  // namespace medusa::testing
