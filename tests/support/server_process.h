#pragma once
// A real medusa-server child process on free loopback ports, and the gRPC clients the
// server tests talk to it with.

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "medusa/v1/generator.grpc.pb.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace medusa::testing {

// Killed by the destructor if still running.
class ServerProcess {
 public:
  ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return process_.pid(); }  // for /proc/<pid> (soak and fault tests)
  std::string address() const;
  // The channel target: an ipv4 address needs no resolver, so a refused connection
  // (the server still starting) is retried after the reconnect backoff, not after the
  // DNS resolver's re-resolution delay.
  std::string target() const { return "ipv4:" + address(); }
  const std::string& log_path() const { return process_.log_path(); }
  std::string Log() const { return process_.Log(); }

  // Starts bin/medusa-server with `args` plus the ports and loopback host; `env`
  // adds environment variables (NAME=VALUE). The log goes to a file in `dir`.
  void Start(const std::vector<std::string>& args, const TempDir& dir, const std::vector<std::string>& env = {},
             bool pass_ports = true);

  // Health of `service` ("" for the server), or nullopt when the call fails.
  std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(const std::string& service = "");
  // Waits until the health service says SERVING; fails if the process exits first.
  ::testing::AssertionResult WaitServing(absl::Duration timeout = absl::Seconds(90));
  // Waits until the log has at least `lines` non-empty lines (it is written after the
  // events it reports, so a test reads it only once what it expects is there).
  ::testing::AssertionResult WaitLogLines(int lines, absl::Duration timeout = absl::Seconds(30));

  void Signal(int signal) { process_.Signal(signal); }
  // Exit code once the process ends within `timeout`, else nullopt.
  std::optional<int> WaitExit(absl::Duration timeout) { return process_.WaitExit(timeout); }

  // The credentials of the channels made from now on (TLS for a TLS server; default plaintext).
  void set_channel_credentials(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    credentials_ = std::move(credentials);
    channel_.reset();
  }

  // Channels retry a refused connection quickly (the server may still be starting).
  static grpc::ChannelArguments FastReconnect();
  std::shared_ptr<grpc::Channel> Channel();
  std::unique_ptr<v1::Generator::Stub> Stub();
  // A stub on its own connection (its own HTTP/2 stream limit).
  std::unique_ptr<v1::Generator::Stub> StubOnNewConnection();

  std::string Metrics();
  std::optional<double> Metric(const std::string& series);

 private:
  int port_;
  int metrics_port_;
  ChildProcess process_;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_ = grpc::InsecureChannelCredentials();
  std::atomic<int> next_channel_{0};
};

// One health check as the kubelet's gRPC probe makes it: a new plaintext connection to
// `target`, waited for up to `timeout`; nullopt when the call fails (NOT_FOUND included).
std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> ProbeHealth(
    const std::string& target, const std::string& service, absl::Duration timeout = absl::Seconds(1));

// Server flags for SmolLM2 with random heads (written into `heads_path`) verifying a
// chain, one thread and a 64 MiB KV cache: slow enough streams to act on mid-way.
std::vector<std::string> SmolWithRandomHeadsArgs(const std::string& heads_path);

// The same, plus a calibration beside the heads and --tree=auto: with no tree timings for this
// machine the server times trees at start-up, so it loads for 15 s or more after it listens
// (for tests that act while the model loads).
std::vector<std::string> SmolSlowToLoadArgs(const std::string& heads_path);

}  // namespace medusa::testing
