// SIGTERM under traffic (SmolLM2, slow enough for streams to be in flight): health
// turns NOT_SERVING (the liveness name stays SERVING), new calls get UNAVAILABLE, the running streams complete, and the
// process exits 0. With a grace period too short, the streams are cut (UNAVAILABLE)
// and the exit is still clean.

#include <signal.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/fault_clients.h"
#include "tests/support/generate_stream.h"
#include "tests/support/loopback.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

using grpc::health::v1::HealthCheckResponse;

constexpr int kStreams = 3;

class ServerShutdownTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& extra) {
    ASSERT_MODEL_PRESENT(kSmolModel);
    std::vector<std::string> args = SmolWithRandomHeadsArgs(dir_.file("heads.safetensors"));
    args.insert(args.end(), extra.begin(), extra.end());
    server_.Start(args, dir_);
    ASSERT_TRUE(server_.WaitServing());
  }

  // Starts kStreams streams of `tokens` tokens and returns once each has a chunk.
  void StartStreams(int tokens) {
    for (int i = 0; i < kStreams; ++i) {
      threads_.emplace_back([this, i, tokens] {
        v1::GenerateRequest request = GreedyRequest(absl::StrCat("Tell me about the number ", i), tokens);
        request.set_ignore_eos(true);
        StreamOptions options;
        options.on_chunk = [&](int chunk) {
          if (chunk == 1) ++started_;
        };
        outcomes_[i] = RunGenerate(*server_.StubOnNewConnection(), request, options);
      });
    }
    for (int i = 0; i < 1200 && started_ < kStreams; ++i) absl::SleepFor(absl::Milliseconds(50));
    ASSERT_EQ(started_.load(), kStreams) << server_.Log();
  }
  void TearDown() override {
    if (!threads_.empty()) {  // a failed assertion left streams running
      server_.Signal(SIGKILL);
      JoinStreams();
    }
  }
  void JoinStreams() {
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

  TempDir dir_;
  ServerProcess server_;
  std::vector<std::thread> threads_;
  std::atomic<int> started_{0};
  StreamOutcome outcomes_[kStreams];
};

TEST_F(ServerShutdownTest, SigtermLetsRunningStreamsFinishAndExitsZero) {
  // With a plaintext health port too (the probes' port beside TLS): it follows the drain.
  const int health_port = FreePort();
  const std::string health = absl::StrCat("ipv4:127.0.0.1:", health_port);
  // Long enough for the three streams to finish (under TSan 60 s was not).
  const double grace_s = 60 * std::min(kSlowdown, 5.0);
  Start({absl::StrCat("--shutdown-grace-seconds=", grace_s), "--max-running=4",
         absl::StrCat("--health-port=", health_port)});
  StartStreams(/*tokens=*/40);
  server_.Signal(SIGTERM);

  // While the streams drain: NOT_SERVING, and new calls are refused.
  bool not_serving = false;
  for (int i = 0; i < 100 && !not_serving; ++i) {
    not_serving = server_.Health("") == HealthCheckResponse::NOT_SERVING;
    if (!not_serving) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(not_serving);
  EXPECT_EQ(server_.Health("medusa.v1.Generator"), HealthCheckResponse::NOT_SERVING);
  // The process is alive and draining: a liveness probe that failed now would restart the
  // container and cut the streams the drain is finishing.
  EXPECT_EQ(server_.Health("medusa.v1.Liveness"), HealthCheckResponse::SERVING);
  EXPECT_EQ(ProbeHealth(health, "medusa.v1.Generator"), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(ProbeHealth(health, "medusa.v1.Liveness"), HealthCheckResponse::SERVING);
  StreamOutcome late = RunGenerate(*server_.StubOnNewConnection(), GreedyRequest("Hello", 4));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE) << late.status.error_message();

  JoinStreams();
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE(i);
    EXPECT_TRUE(outcomes_[i].status.ok()) << outcomes_[i].status.error_message();
    ASSERT_TRUE(outcomes_[i].finished());
    EXPECT_EQ(outcomes_[i].finish().usage().generated_tokens(), 40);
    EXPECT_EQ(outcomes_[i].ids().size(), 40u);
  }
  EXPECT_EQ(server_.WaitExit(absl::Seconds(30)), 0) << server_.Log();
}

TEST_F(ServerShutdownTest, GracePeriodCutsLongStreamsAndStillExitsZero) {
  Start({"--shutdown-grace-seconds=0.5", "--kv-cache-mb=256"});  // room for all three to run
  StartStreams(/*tokens=*/1000);
  const absl::Time signalled = absl::Now();
  server_.Signal(SIGTERM);
  JoinStreams();
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_EQ(outcomes_[i].status.error_code(), grpc::StatusCode::UNAVAILABLE) << outcomes_[i].status.error_message();
    EXPECT_LT(outcomes_[i].ids().size(), 1000u);
  }
  EXPECT_EQ(server_.WaitExit(absl::Seconds(30)), 0) << server_.Log();
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(10));
}

}  // namespace
}  // namespace medusa::testing
