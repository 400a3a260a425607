// A real Prometheus server (Debian package `prometheus`) scrapes medusa-server's
// endpoint every second; after traffic its HTTP API gives sane values for the token
// rate, the acceleration rate and the step overhead ratio.

#include <signal.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tests/support/child_process.h"
#include "tests/support/generate_stream.h"
#include "tests/support/loopback.h"
#include "tests/support/random_heads.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";

// A Prometheus child process with its own config and storage in `dir`.
class PrometheusProcess {
 public:
  ~PrometheusProcess() {
    // SIGTERM first, so Prometheus closes its storage; ChildProcess kills what is left.
    process_.Signal(SIGTERM);
    process_.WaitExit(absl::Seconds(5));
  }

  void Start(const TempDir& dir, int target_port) {
    port_ = FreePort();
    const std::string config = dir.file("prometheus.yml");
    std::ofstream(config) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          << "scrape_configs:\n  - job_name: medusa\n    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    const std::vector<std::string> argv = {kPrometheus, "--config.file=" + config,
                                           "--storage.tsdb.path=" + dir.file("tsdb"),
                                           absl::StrCat("--web.listen-address=127.0.0.1:", port_),
                                           "--log.level=warn"};
    ASSERT_TRUE(process_.Start(argv, {}, dir.file("prometheus.log")));
  }

  ::testing::AssertionResult WaitReady() {
    for (int i = 0; i < 600; ++i) {
      if (HttpGet(port_, "/-/ready")) return ::testing::AssertionSuccess();
      absl::SleepFor(absl::Milliseconds(50));
    }
    return ::testing::AssertionFailure() << "Prometheus not ready:\n" << process_.Log();
  }

  // The value of an instant query with one result, or nullopt (no data yet).
  std::optional<double> Query(const std::string& promql) {
    std::optional<std::string> body = HttpGet(port_, "/api/v1/query?query=" + UrlEncode(promql));
    if (!body) return std::nullopt;
    nlohmann::json reply = nlohmann::json::parse(*body, nullptr, false);
    if (!reply.is_object() || reply["status"] != "success") return std::nullopt;
    const nlohmann::json& result = reply["data"]["result"];
    if (!result.is_array() || result.size() != 1) return std::nullopt;
    double value = 0;
    if (!absl::SimpleAtod(result[0]["value"][1].get<std::string>(), &value)) return std::nullopt;
    return value;
  }

  // Polls until the query has a value satisfying `ok` (scrapes come every second).
  std::optional<double> QueryUntil(const std::string& promql, const std::function<bool(double)>& ok) {
    std::optional<double> value;
    for (int i = 0; i < 60; ++i) {
      value = Query(promql);
      if (value && ok(*value)) return value;
      absl::SleepFor(absl::Milliseconds(250));
    }
    return value;
  }

 private:
  ChildProcess process_;
  int port_ = 0;
};

// Traffic of greedy 100-token streams until the queries are done; every other one plain when
// `alternate_plain`, else all Medusa. Then the values Prometheus scraped.
void ScrapeSaneValues(const std::vector<std::string>& extra_flags, bool alternate_plain) {
  ASSERT_TRUE(std::filesystem::exists(kPrometheus))
      << kPrometheus << " is missing: run scripts/setup.sh (it installs the Debian package prometheus)";
  ASSERT_MODEL_PRESENT(kStoriesModel);
  TempDir dir;
  const std::string heads = dir.file("heads.safetensors");
  WriteRandomHeads(kStoriesModel, heads);
  ServerProcess server;
  std::vector<std::string> flags = {"--model=" + kStoriesModel, "--heads=" + heads, "--threads=1", "--kv-cache-mb=16"};
  flags.insert(flags.end(), extra_flags.begin(), extra_flags.end());
  server.Start(flags, dir);
  ASSERT_TRUE(server.WaitServing());
  PrometheusProcess prometheus;
  prometheus.Start(dir, server.metrics_port());
  ASSERT_TRUE(prometheus.WaitReady());

  // Traffic for as long as the queries run: greedy streams, one after another. The overhead
  // ratio needs both modes' recent steps at batch size 1 (the warm-up's steps do not count).
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread traffic([&] {
    auto stub = server.Stub();
    for (int i = 0; !stop; ++i) {
      v1::GenerateRequest request = GreedyRequest("Once upon a time", 100);
      request.set_ignore_eos(true);
      request.set_medusa(!alternate_plain || i % 2 == 0);
      if (!RunGenerate(*stub, request).status.ok()) ++failures;
    }
  });

  auto positive = [](double v) { return std::isfinite(v) && v > 0; };
  const std::optional<double> up = prometheus.QueryUntil("up{job=\"medusa\"}", [](double v) { return v == 1; });
  const std::optional<double> rate = prometheus.QueryUntil("rate(medusa_generated_tokens_total[5s])", positive);
  const std::optional<double> acceleration = prometheus.QueryUntil("medusa_acceleration_rate", positive);
  const std::optional<double> overhead = prometheus.QueryUntil("medusa_step_overhead_ratio", positive);
  const std::optional<double> steps = prometheus.QueryUntil("rate(medusa_decode_steps_total[5s])", positive);
  stop = true;
  traffic.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(up, 1.0) << "Prometheus could not scrape 127.0.0.1:" << server.metrics_port();
  ASSERT_TRUE(rate.has_value() && steps.has_value() && acceleration.has_value() && overhead.has_value());
  // Tokens per second: positive, and not more than the steps could make (one bonus
  // token plus at most 5 draft tokens per sequence-step).
  EXPECT_GT(*rate, 0);
  EXPECT_LE(*rate, 6 * *steps * 1.5);
  // Random heads rarely guess right, but every step yields at least its bonus token.
  EXPECT_GE(*acceleration, 1.0);
  EXPECT_LE(*acceleration, 6.0);
  // A 63-node tree costs more than a plain step, but not absurdly more on this model.
  EXPECT_GT(*overhead, 0.5);
  EXPECT_LT(*overhead, 200.0);
}

// Medusa and plain requests in turn: both modes are timed at batch size 1.
TEST(ServerPrometheusTest, PrometheusScrapesSaneValues) { ScrapeSaneValues({}, /*alternate_plain=*/true); }

// Medusa requests only, one at a time: the plain steps the overhead ratio needs come from the
// scheduler's probes (--overhead-probe-every). Without them, three requests give three plain
// steps (each length-limited request's last step, one token left, is plain), too few: NaN.
TEST(ServerPrometheusTest, ProbeStepsGiveTheOverheadWithMedusaOnlyTraffic) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  TempDir dir;
  const std::string heads = dir.file("heads.safetensors");
  WriteRandomHeads(kStoriesModel, heads);
  for (const int every : {0, 4}) {
    SCOPED_TRACE(absl::StrCat("--overhead-probe-every=", every));
    ServerProcess server;
    server.Start({"--model=" + kStoriesModel, "--heads=" + heads, "--threads=1", "--kv-cache-mb=16",
                  absl::StrCat("--overhead-probe-every=", every)},
                 dir);
    ASSERT_TRUE(server.WaitServing());
    auto stub = server.Stub();
    for (int i = 0; i < 3; ++i) {
      v1::GenerateRequest request = GreedyRequest("Once upon a time", 200);
      request.set_ignore_eos(true);
      ASSERT_TRUE(RunGenerate(*stub, request).status.ok());
    }
    const std::optional<double> overhead = MetricValue(server.Metrics(), "medusa_step_overhead_ratio");
    ASSERT_TRUE(overhead.has_value());
    if (every == 0) {
      EXPECT_TRUE(std::isnan(*overhead)) << *overhead;
    } else {
      EXPECT_TRUE(std::isfinite(*overhead) && *overhead > 0.5 && *overhead < 200) << *overhead;
    }
  }
}

}  // namespace
}  // namespace medusa::testing
