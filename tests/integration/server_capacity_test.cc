// Requests that leave early and requests that do not fit, on SmolLM2 (slow enough on
// a CPU for a stream to be cut in the middle): a cancelled stream and an expired
// deadline free every KV block of the request at once (medusa_kv_cache_blocks_used),
// a full waiting queue answers RESOURCE_EXHAUSTED at once, and the server goes on
// serving normally after each. A connection runs at most --max-concurrent-streams streams.

#include <thread>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "tests/support/generate_stream.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

class ServerCapacityTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& extra = {}) {
    ASSERT_MODEL_PRESENT(kSmolModel);
    std::vector<std::string> args = SmolWithRandomHeadsArgs(dir_.file("heads.safetensors"));
    args.insert(args.end(), extra.begin(), extra.end());
    server_.Start(args, dir_);
    ASSERT_TRUE(server_.WaitServing());
  }

  // A stream long enough to still run when the test acts on it.
  static v1::GenerateRequest LongRequest() {
    v1::GenerateRequest request = GreedyRequest("Write a long story about a dragon.", 400);
    request.set_ignore_eos(true);
    return request;
  }

  // Polls /metrics until `series` has `value` (blocks return on the scheduler's
  // thread right after the cancellation).
  ::testing::AssertionResult EventuallyEquals(const std::string& series, double value) {
    std::optional<double> seen;
    for (int i = 0; i < 100; ++i) {
      seen = server_.Metric(series);
      if (seen == value) return ::testing::AssertionSuccess();
      absl::SleepFor(absl::Milliseconds(50));
    }
    return ::testing::AssertionFailure() << series << " is " << (seen ? std::to_string(*seen) : "absent")
                                         << ", expected " << value;
  }

  void ExpectServesNormally() {
    StreamOutcome out = RunGenerate(*server_.Stub(), GreedyRequest("Hello", 4));
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_TRUE(out.finished());
    EXPECT_TRUE(EventuallyEquals("medusa_kv_cache_blocks_used", 0));
  }

  TempDir dir_;
  ServerProcess server_;
};

TEST_F(ServerCapacityTest, CancelMidStreamFreesEveryBlock) {
  Start();
  std::optional<double> blocks_while_running;
  StreamOptions options;
  options.cancel_after_chunks = 3;
  options.on_chunk = [&](int chunk) {
    if (chunk == 3) blocks_while_running = server_.Metric("medusa_kv_cache_blocks_used");
  };
  StreamOutcome out = RunGenerate(*server_.Stub(), LongRequest(), options);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED) << out.status.error_message();
  ASSERT_TRUE(blocks_while_running.has_value());
  EXPECT_GT(*blocks_while_running, 0) << "the running request held no KV block";
  EXPECT_LT(out.ids().size(), 400u);
  EXPECT_TRUE(EventuallyEquals("medusa_kv_cache_blocks_used", 0));
  EXPECT_TRUE(EventuallyEquals("medusa_requests_running", 0));
  EXPECT_TRUE(EventuallyEquals("medusa_requests_total{status=\"cancelled\"}", 1));
  ExpectServesNormally();
}

TEST_F(ServerCapacityTest, DeadlineExpiryFreesEveryBlock) {
  Start();
  StreamOptions options;
  options.timeout = absl::Milliseconds(1500);
  StreamOutcome out = RunGenerate(*server_.Stub(), LongRequest(), options);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << out.status.error_message();
  EXPECT_FALSE(out.chunks.empty()) << "the deadline passed before the first token: not mid-stream";
  EXPECT_TRUE(EventuallyEquals("medusa_kv_cache_blocks_used", 0));
  EXPECT_TRUE(EventuallyEquals("medusa_requests_total{status=\"deadline_exceeded\"}", 1));
  ExpectServesNormally();
}

TEST_F(ServerCapacityTest, FullQueueIsResourceExhaustedAtOnce) {
  Start({"--max-running=1", "--max-waiting=1"});
  // One running, one waiting: the third has no place.
  auto stub = server_.Stub();
  grpc::ClientContext running_context, waiting_context;
  auto running = stub->Generate(&running_context, LongRequest());
  v1::GenerateResponse first;
  ASSERT_TRUE(running->Read(&first));  // it runs
  auto waiting = stub->Generate(&waiting_context, LongRequest());
  ASSERT_TRUE(EventuallyEquals("medusa_requests_waiting", 1));

  const absl::Time start = absl::Now();
  StreamOutcome refused = RunGenerate(*stub, LongRequest());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.status.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "refused only after waiting";
  EXPECT_TRUE(refused.chunks.empty());

  running_context.TryCancel();
  waiting_context.TryCancel();
  v1::GenerateResponse ignored;
  while (running->Read(&ignored)) {}
  while (waiting->Read(&ignored)) {}
  EXPECT_EQ(running->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(waiting->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(EventuallyEquals("medusa_requests_total{status=\"resource_exhausted\"}", 1));
  // The client hears CANCELLED at once; the server ends the requests before its next step.
  EXPECT_TRUE(EventuallyEquals("medusa_requests_running", 0));
  EXPECT_TRUE(EventuallyEquals("medusa_requests_waiting", 0));
  ExpectServesNormally();
}

// --max-concurrent-streams is HTTP/2's per-connection limit: a second stream on a
// connection that has one running waits in the client until the first ends (it never
// reaches the scheduler meanwhile), while a stream on another connection runs at once.
TEST_F(ServerCapacityTest, ConcurrentStreamsPerConnectionAreLimited) {
  Start({"--max-concurrent-streams=1", "--max-running=4"});
  auto stub = server_.StubOnNewConnection();
  grpc::ClientContext first_context;
  auto first = stub->Generate(&first_context, LongRequest());
  v1::GenerateResponse chunk;
  ASSERT_TRUE(first->Read(&chunk));  // it runs
  // A synchronous call waits in its constructor until the stream may start: a thread.
  StreamOutcome second;
  std::thread second_thread([&] { second = RunGenerate(*stub, GreedyRequest("Hello", 4)); });

  // Another connection is not held back, and the held stream has not reached the server.
  StreamOutcome elsewhere = RunGenerate(*server_.StubOnNewConnection(), GreedyRequest("Hi", 4));
  ASSERT_TRUE(elsewhere.status.ok()) << elsewhere.status.error_message();
  EXPECT_TRUE(elsewhere.finished());
  // (Eventually: the server counts a request done just after its last chunk is sent.)
  EXPECT_TRUE(EventuallyEquals("medusa_requests_total{status=\"ok\"}", 1)) << "only the other connection's";
  EXPECT_TRUE(EventuallyEquals("medusa_requests_running", 1));
  EXPECT_EQ(server_.Metric("medusa_requests_waiting"), 0.0);
  EXPECT_TRUE(first->Read(&chunk)) << "the first stream still runs";

  // The first ends; the held stream then runs to completion on the same connection.
  const absl::Time first_cancelled = absl::Now();
  first_context.TryCancel();
  while (first->Read(&chunk)) {}
  EXPECT_EQ(first->Finish().error_code(), grpc::StatusCode::CANCELLED);
  second_thread.join();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_TRUE(second.finished());
  ASSERT_FALSE(second.arrivals.empty());
  EXPECT_GT(second.arrivals.front(), first_cancelled) << "it streamed while the first held the connection";
  EXPECT_TRUE(EventuallyEquals("medusa_requests_total{status=\"ok\"}", 2));
  ExpectServesNormally();
}

// A KV pool of two blocks (32 tokens of SmolLM2): a prompt that cannot fit is refused at
// once, one whose generation outgrows the pool ends RESOURCE_EXHAUSTED mid-stream with
// its blocks back; the server goes on serving.
TEST_F(ServerCapacityTest, ExhaustedKvMemoryIsResourceExhaustedAndLeaksNothing) {
  ASSERT_MODEL_PRESENT(kSmolModel);
  server_.Start({"--model=" + kSmolModel, "--threads=1", "--kv-cache-mb=2"}, dir_);
  ASSERT_TRUE(server_.WaitServing());
  ASSERT_EQ(server_.Metric("medusa_kv_cache_blocks_used"), 0.0);
  auto stub = server_.Stub();
  StreamOutcome too_long = RunGenerate(*stub, GreedyRequest(std::string(300, 'a') + " b c d e f g", 4));
  EXPECT_EQ(too_long.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << too_long.status.error_message();
  EXPECT_TRUE(too_long.chunks.empty());

  v1::GenerateRequest outgrows = GreedyRequest("Once upon a time", 100);
  outgrows.set_ignore_eos(true);
  StreamOutcome out = RunGenerate(*stub, outgrows);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << out.status.error_message();
  EXPECT_TRUE(absl::StrContains(out.status.error_message(), "KV memory ran out")) << out.status.error_message();
  EXPECT_FALSE(out.chunks.empty()) << "it ran out before the first token: not mid-generation";
  EXPECT_LT(out.ids().size(), 32u);
  EXPECT_TRUE(EventuallyEquals("medusa_kv_cache_blocks_used", 0));
  EXPECT_TRUE(EventuallyEquals("medusa_requests_total{status=\"resource_exhausted\"}", 2));
  ExpectServesNormally();
}

}  // namespace
}  // namespace medusa::testing
