#pragma once
// What the soak and fault tests share: badly behaved clients (a `medusa client` process to
// kill, a stream that never reads), a process's resources from /proc, a histogram of status
// codes, and the statistics they report.

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "grpcpp/support/sync_stream.h"
#include "medusa/v1/generator.grpc.pb.h"
#include "tests/support/child_process.h"

namespace medusa::testing {

// How many times slower a sanitizer build (scripts/sanitize.sh) runs the server: bounds and
// waits scale by it.
#if defined(__SANITIZE_THREAD__)
constexpr double kSlowdown = 30;
#elif defined(__SANITIZE_ADDRESS__)
constexpr double kSlowdown = 10;  // under ASan a SmolLM2 step took up to 4 s on the loaded 2-core machine
#else
constexpr double kSlowdown = 1;
#endif

// A process's resources as /proc shows them.
struct ProcessResources {
  double rss_mib = 0;  // VmRSS
  int threads = 0;     // entries of /proc/<pid>/task
  int fds = 0;         // entries of /proc/<pid>/fd
};
// Nullopt when the process is gone.
std::optional<ProcessResources> ReadResources(pid_t pid);

// How many calls ended with each status code; any thread may add.
class StatusHistogram {
 public:
  void Add(grpc::StatusCode code);
  int count(grpc::StatusCode code) const;
  int total() const;
  // Codes outside `allowed`, with their counts ("UNKNOWN x2"); empty when none.
  std::string Unexpected(const std::vector<grpc::StatusCode>& allowed) const;
  // "OK=12 DEADLINE_EXCEEDED=3", and as a JSON object.
  std::string ToString() const;
  std::string ToJson() const;
  void Merge(const StatusHistogram& other);
  void Clear();

 private:
  mutable std::mutex mu_;
  std::map<int, int> counts_;
};
std::string StatusCodeName(grpc::StatusCode code);

// The q-quantile (0..1) of `values` by nearest rank; 0 for none.
double Quantile(std::vector<double> values, double q);
// Least-squares slope of y over x (0 with fewer than two points).
double Slope(const std::vector<double>& x, const std::vector<double>& y);

// A Generate stream whose client never reads: its own connection, with HTTP/2 flow control
// windows of `window_bytes` (no BDP probing, which would grow them), so the server's writes
// stall once that much is unread.
class StalledStream {
 public:
  StalledStream(const std::string& target, const v1::GenerateRequest& request,
                absl::Duration timeout = absl::InfiniteDuration(), int window_bytes = 1024);
  ~StalledStream();  // cancels the call and collects its status
  // Cancels (if not over) and returns the call's status.
  grpc::Status Finish();

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generator::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader_;
  std::optional<grpc::Status> status_;
};

// A well-behaved client on a thread of its own: one stream after another of `request` on its own
// connection, reading every chunk and backing off 50 ms after a failed call, until Stop(). Records the gaps between
// chunks (inter-token latency as the client sees it) and every call's status.
class SteadyClient {
 public:
  SteadyClient(std::unique_ptr<v1::Generator::Stub> stub, v1::GenerateRequest request);
  ~SteadyClient();
  void Stop();  // waits for the stream in flight to end
  std::vector<double> gaps_ms() const;
  const StatusHistogram& statuses() const { return statuses_; }
  int streams() const { return streams_; }

 private:
  void Run();

  std::unique_ptr<v1::Generator::Stub> stub_;
  const v1::GenerateRequest request_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<double> gaps_ms_;
  StatusHistogram statuses_;
  std::atomic<int> streams_{0};
  std::thread thread_;
};

// `bin/medusa client --addr ADDR --prompt PROMPT --max-tokens N --ignore-eos` as a child
// process (its output in `log_path`), to be killed mid-stream with SIGKILL.
std::unique_ptr<ChildProcess> StartClientProcess(const std::string& address, const std::string& prompt, int max_tokens,
                                                 const std::string& log_path);

}  // namespace medusa::testing
