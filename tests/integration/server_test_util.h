#pragma once
// Helpers of the server integration tests: a real medusa-server process on free
// loopback ports, gRPC clients (Generator, health), a plain HTTP GET for /metrics and
// Prometheus's API, and random Medusa heads written to a temporary file.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/medusa/heads.h"
#include "engine/model/gguf.h"
#include "engine/model/loader.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "medusa/v1/generator.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/integration/test_models.h"

namespace medusa::testing {

namespace fs = std::filesystem;

// A fresh directory under the system's temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            absl::StrCat("medusa_server_test_", getpid(), "_", counter++, "_", absl::ToUnixMicros(absl::Now()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// A loopback port nobody listens on now (the kernel's choice for port 0).
inline int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// Whether something listens on the loopback port.
inline bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// GET http://127.0.0.1:port/target over HTTP/1.0; the body, or nullopt when the
// connection fails or the status is not 200.
inline std::optional<std::string> HttpGet(int port, const std::string& target) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return std::nullopt;
  }
  const std::string request = absl::StrCat("GET ", target, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (send(fd, request.data(), request.size(), 0) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return std::nullopt;
  }
  std::string response;
  char buffer[8192];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) response.append(buffer, n);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos || !absl::StartsWith(response, "HTTP/1.") ||
      response.substr(9, 3) != "200") {
    return std::nullopt;
  }
  return response.substr(body + 4);
}

inline std::string UrlEncode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, absl::StrFormat("%%%02X", c));
    }
  }
  return out;
}

// The value of one series in a text exposition ("medusa_requests_total{status=\"ok\"}"),
// or nullopt when absent.
inline std::optional<double> MetricValue(const std::string& exposition, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::StartsWith(line, series) || line.size() <= series.size() || line[series.size()] != ' ') continue;
    std::string value(line.substr(series.size() + 1));
    if (value == "NaN" || value == "nan") return std::nan("");
    double parsed = 0;
    if (absl::SimpleAtod(value, &parsed)) return parsed;
  }
  return std::nullopt;
}

// Model config fields random heads need (dim, vocab) without loading GGUF weights.
inline ModelConfig ConfigForHeads(const std::string& model_path) {
  ModelConfig config;
  if (absl::EndsWith(model_path, ".gguf")) {
    auto file = gguf::File::Open(model_path);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return config;
    config.dim = static_cast<int>(*(*file)->GetInt("llama.embedding_length"));
    config.vocab_size = static_cast<int>(*(*file)->ArrayLength("tokenizer.ggml.tokens"));
    return config;
  }
  auto model = LoadModel(model_path);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? model->config : config;
}

// Seeded random heads (5 heads, 1 layer, the base model's classifier) in `path`.
inline void WriteRandomHeads(const std::string& model_path, const std::string& path) {
  MedusaHeadsWeights heads = RandomMedusaHeads(ConfigForHeads(model_path), 5, 1, false, /*seed=*/7, 0.05f);
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr).ok());
}

// Server flags for SmolLM2 with random heads (written into `heads_path`) verifying a
// chain, one thread and a 64 MiB KV cache: slow enough streams to act on mid-way.
inline std::vector<std::string> SmolWithRandomHeadsArgs(const std::string& heads_path) {
  WriteRandomHeads(kSmolModel, heads_path);
  return {"--model=" + kSmolModel, "--heads=" + heads_path, "--tree=chain", "--threads=1", "--kv-cache-mb=64"};
}

// A medusa-server child process on free loopback ports; killed by the destructor if
// still running.
class ServerProcess {
 public:
  ServerProcess() : port_(FreePort()), metrics_port_(FreePort()) {}
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  // The channel target: an ipv4 address needs no resolver, so a refused connection
  // (the server still starting) is retried after the reconnect backoff, not after the
  // DNS resolver's re-resolution delay.
  std::string target() const { return "ipv4:" + address(); }
  const std::string& log_path() const { return log_path_; }
  std::string Log() const {
    std::ifstream in(log_path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Starts bin/medusa-server with `args` plus the ports and loopback host; `env`
  // adds environment variables (NAME=VALUE). The log goes to a file in `dir`.
  void Start(const std::vector<std::string>& args, const TempDir& dir, const std::vector<std::string>& env = {},
             bool pass_ports = true) {
    log_path_ = dir.file(absl::StrCat("server_", port_, ".log"));
    std::vector<std::string> argv = {BinaryPath("bin/medusa-server"), "--host=127.0.0.1"};
    if (pass_ports) {
      argv.push_back(absl::StrCat("--port=", port_));
      argv.push_back(absl::StrCat("--metrics-port=", metrics_port_));
    }
    argv.insert(argv.end(), args.begin(), args.end());
    // Everything the child needs is prepared before fork: the test process has gRPC
    // threads, so the child may only make async-signal-safe calls.
    std::vector<std::string> envs = env;
    for (char** e = environ; *e != nullptr; ++e) envs.push_back(*e);
    std::vector<char*> cargv, cenv;
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    for (const std::string& e : envs) cenv.push_back(const_cast<char*>(e.c_str()));
    cargv.push_back(nullptr);
    cenv.push_back(nullptr);
    const int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(log, 0) << log_path_;
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      execve(cargv[0], cargv.data(), cenv.data());
      _exit(127);
    }
    close(log);
  }

  // Health of `service` ("" for the server), or nullopt when the call fails.
  std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(const std::string& service = "") {
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

  // Waits until the health service says SERVING; fails if the process exits first.
  ::testing::AssertionResult WaitServing(absl::Duration timeout = absl::Seconds(90)) {
    const absl::Time end = absl::Now() + timeout;
    // First until the port accepts connections: a gRPC channel whose first connection
    // was refused retries only after seconds.
    while (absl::Now() < end && !Accepts(port_)) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "medusa-server exited (" << status << "):\n" << Log();
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    while (absl::Now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "medusa-server exited (" << status << "):\n" << Log();
      }
      if (Health() == grpc::health::v1::HealthCheckResponse::SERVING) return ::testing::AssertionSuccess();
      absl::SleepFor(absl::Milliseconds(50));
    }
    return ::testing::AssertionFailure() << "medusa-server not SERVING after " << timeout << ":\n" << Log();
  }

  // Only while the child runs (pid -1 would signal every process).
  void Signal(int signal) {
    if (pid_ > 0) kill(pid_, signal);
  }

  // Exit code once the process ends within `timeout`, else nullopt (it is then killed).
  std::optional<int> WaitExit(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (absl::Now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }

  // Channels retry a refused connection quickly (the server may still be starting).
  static grpc::ChannelArguments FastReconnect() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
    return args;
  }
  std::shared_ptr<grpc::Channel> Channel() {
    if (!channel_) {
      channel_ = grpc::CreateCustomChannel(target(), grpc::InsecureChannelCredentials(), FastReconnect());
    }
    return channel_;
  }
  std::unique_ptr<v1::Generator::Stub> Stub() { return v1::Generator::NewStub(Channel()); }
  // A stub on its own connection (its own HTTP/2 stream limit).
  std::unique_ptr<v1::Generator::Stub> StubOnNewConnection() {
    grpc::ChannelArguments args = FastReconnect();
    args.SetInt("medusa.test.unique", next_channel_++);  // distinct args: no subchannel sharing
    return v1::Generator::NewStub(grpc::CreateCustomChannel(target(), grpc::InsecureChannelCredentials(), args));
  }

  std::string Metrics() { return HttpGet(metrics_port_, "/metrics").value_or(""); }
  std::optional<double> Metric(const std::string& series) { return MetricValue(Metrics(), series); }

 private:
  int port_;
  int metrics_port_;
  pid_t pid_ = -1;
  std::string log_path_;
  std::shared_ptr<grpc::Channel> channel_;
  int next_channel_ = 0;
};

// One Generate stream as the client saw it.
struct StreamOutcome {
  grpc::Status status;
  absl::Time start;
  std::vector<v1::GenerateResponse> chunks;
  std::vector<absl::Time> arrivals;

  std::string text() const {
    std::string out;
    for (const auto& c : chunks) out += c.text();
    return out;
  }
  std::vector<int32_t> ids() const {
    std::vector<int32_t> out;
    for (const auto& c : chunks) out.insert(out.end(), c.token_ids().begin(), c.token_ids().end());
    return out;
  }
  bool finished() const { return !chunks.empty() && chunks.back().has_finish(); }
  const v1::Finish& finish() const { return chunks.back().finish(); }
};

struct StreamOptions {
  int cancel_after_chunks = -1;                      // TryCancel once this many arrived
  absl::Duration timeout = absl::InfiniteDuration();  // the call's deadline
  std::function<void(int chunk)> on_chunk;           // called after each chunk
};

inline StreamOutcome RunGenerate(v1::Generator::Stub& stub, const v1::GenerateRequest& request,
                                 const StreamOptions& options = {}) {
  grpc::ClientContext context;
  if (options.timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  }
  StreamOutcome out;
  out.start = absl::Now();
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    out.chunks.push_back(response);
    out.arrivals.push_back(absl::Now());
    if (options.on_chunk) options.on_chunk(static_cast<int>(out.chunks.size()));
    if (static_cast<int>(out.chunks.size()) == options.cancel_after_chunks) context.TryCancel();
  }
  out.status = reader->Finish();
  return out;
}

inline v1::GenerateRequest GreedyRequest(const std::string& prompt, int max_tokens, bool medusa = true) {
  v1::GenerateRequest request;
  request.set_prompt(prompt);
  request.set_max_tokens(max_tokens);
  request.set_medusa(medusa);
  return request;
}

// A shell command's exit code and its output (stdout and stderr together).
struct CommandOutput {
  int exit_code = -1;
  std::string output;
};
inline CommandOutput RunCommand(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  CommandOutput result;
  if (pipe == nullptr) return result;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) result.output.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The JSON object a `medusa` command printed (discarded when it printed something else).
inline nlohmann::json RunJsonCommand(const std::string& command) {
  const CommandOutput run = RunCommand(command);
  EXPECT_EQ(run.exit_code, 0) << command << "\n" << run.output;
  nlohmann::json parsed = nlohmann::json::parse(run.output, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << run.output;
  return parsed;
}

// `medusa generate ... --json` in-process, for comparison: its JSON object.
inline nlohmann::json GenerateLocally(const std::string& args) {
  return RunJsonCommand(absl::StrCat(BinaryPath("bin/medusa"), " generate --json ", args));
}

// Shell quoting for one argument.
inline std::string Quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += "'\\''";
    else out.push_back(c);
  }
  return out + "'";
}

}  // namespace medusa::testing
