#include "tests/support/server_process.h"

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"
#include "tests/support/loopback.h"
#include "tests/support/random_heads.h"
#include "tests/support/test_models.h"

namespace medusa::testing {

ServerProcess::ServerProcess() : port_(FreePort()), metrics_port_(FreePort()) {}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

void ServerProcess::Start(const std::vector<std::string>& args, const TempDir& dir,
                          const std::vector<std::string>& env, bool pass_ports) {
  std::vector<std::string> argv = {BinaryPath("bin/medusa-server"), "--host=127.0.0.1"};
  if (pass_ports) {
    argv.push_back(absl::StrCat("--port=", port_));
    argv.push_back(absl::StrCat("--metrics-port=", metrics_port_));
  }
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string log = dir.file(absl::StrCat("server_", port_, ".log"));
  ASSERT_TRUE(process_.Start(argv, env, log)) << "cannot start medusa-server (log " << log << ")";
}

std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> ServerProcess::Health(
    const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(Channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return std::nullopt;
  return response.status();
}

::testing::AssertionResult ServerProcess::WaitServing(absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  int status = 0;
  // First until the port accepts connections: a gRPC channel whose first connection
  // was refused retries only after seconds.
  while (absl::Now() < end && !Accepts(port_)) {
    if (process_.Exited(&status)) {
      return ::testing::AssertionFailure() << "medusa-server exited (" << status << "):\n" << Log();
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  while (absl::Now() < end) {
    if (process_.Exited(&status)) {
      return ::testing::AssertionFailure() << "medusa-server exited (" << status << "):\n" << Log();
    }
    // The Generator's own status: gRPC's default health service reports "" SERVING for an
    // instant after the listener starts, before the server marks it NOT_SERVING.
    if (Health("medusa.v1.Generator") == grpc::health::v1::HealthCheckResponse::SERVING) {
      return ::testing::AssertionSuccess();
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return ::testing::AssertionFailure() << "medusa-server not SERVING after " << timeout << ":\n" << Log();
}

::testing::AssertionResult ServerProcess::WaitLogLines(int lines, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  for (;;) {
    const std::string log = Log();
    const std::vector<absl::string_view> written = absl::StrSplit(log, '\n', absl::SkipEmpty());
    if (static_cast<int>(written.size()) >= lines) return ::testing::AssertionSuccess();
    if (absl::Now() >= end) {
      return ::testing::AssertionFailure() << "the log has " << written.size() << " lines after " << timeout
                                           << ", expected " << lines << ":\n" << log;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

grpc::ChannelArguments ServerProcess::FastReconnect() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  return args;
}

std::shared_ptr<grpc::Channel> ServerProcess::Channel() {
  if (!channel_) channel_ = grpc::CreateCustomChannel(target(), credentials_, FastReconnect());
  return channel_;
}

std::unique_ptr<v1::Generator::Stub> ServerProcess::Stub() { return v1::Generator::NewStub(Channel()); }

std::unique_ptr<v1::Generator::Stub> ServerProcess::StubOnNewConnection() {
  grpc::ChannelArguments args = FastReconnect();
  args.SetInt("medusa.test.unique", next_channel_++);  // distinct args: no subchannel sharing
  return v1::Generator::NewStub(grpc::CreateCustomChannel(target(), credentials_, args));
}

std::string ServerProcess::Metrics() { return HttpGet(metrics_port_, "/metrics").value_or(""); }

std::optional<double> ServerProcess::Metric(const std::string& series) { return MetricValue(Metrics(), series); }

std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> ProbeHealth(const std::string& target,
                                                                                const std::string& service,
                                                                                absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  if (!stub->Check(&context, request, &response).ok()) return std::nullopt;
  return response.status();
}

std::vector<std::string> SmolWithRandomHeadsArgs(const std::string& heads_path) {
  WriteRandomHeads(kSmolModel, heads_path);
  return {"--model=" + kSmolModel, "--heads=" + heads_path, "--tree=chain", "--threads=1", "--kv-cache-mb=64"};
}

std::vector<std::string> SmolSlowToLoadArgs(const std::string& heads_path) {
  std::vector<std::string> args = SmolWithRandomHeadsArgs(heads_path);
  std::string calibration = heads_path;
  if (absl::EndsWith(calibration, ".safetensors")) calibration.resize(calibration.size() - 12);
  std::ofstream(calibration + ".calibration.json")
      << nlohmann::json{{"heads", heads_path},
                        {"topk_accuracy", std::vector<std::vector<double>>(5, {0.5, 0.6, 0.65, 0.68, 0.7})}}
             .dump();
  // After the base's --tree and --kv-cache-mb (the last one counts): timing trees for batches
  // of up to 16 sequences needs the room.
  for (const char* flag : {"--tree=auto", "--max-running=16", "--kv-cache-mb=256"}) args.push_back(flag);
  return args;
}

}  // namespace medusa::testing
