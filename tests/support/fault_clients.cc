#include "tests/support/fault_clients.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "tests/support/generate_stream.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

int CountEntries(const std::string& dir) {
  std::error_code error;
  int n = 0;
  for (std::filesystem::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) ++n;
  return error ? -1 : n;
}

}  // namespace

std::optional<ProcessResources> ReadResources(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const std::string proc = absl::StrCat("/proc/", pid);
  std::ifstream status(proc + "/status");
  ProcessResources r;
  bool have_rss = false;
  for (std::string line; std::getline(status, line);) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "VmRSS:")) continue;
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, " kB");
    int64_t kib = 0;
    have_rss = absl::SimpleAtoi(rest, &kib);
    r.rss_mib = kib / 1024.0;
  }
  r.threads = CountEntries(proc + "/task");
  r.fds = CountEntries(proc + "/fd");
  if (!have_rss || r.threads < 0 || r.fds < 0) return std::nullopt;
  return r;
}

std::string StatusCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : absl::StrCat("CODE_", i);
}

void StatusHistogram::Add(grpc::StatusCode code) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[static_cast<int>(code)];
}

int StatusHistogram::count(grpc::StatusCode code) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counts_.find(static_cast<int>(code));
  return it == counts_.end() ? 0 : it->second;
}

int StatusHistogram::total() const {
  std::lock_guard<std::mutex> lock(mu_);
  int n = 0;
  for (const auto& [code, count] : counts_) n += count;
  return n;
}

std::string StatusHistogram::Unexpected(const std::vector<grpc::StatusCode>& allowed) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [code, count] : counts_) {
    if (std::find(allowed.begin(), allowed.end(), static_cast<grpc::StatusCode>(code)) == allowed.end()) {
      out.push_back(absl::StrCat(StatusCodeName(static_cast<grpc::StatusCode>(code)), " x", count));
    }
  }
  return absl::StrJoin(out, ", ");
}

std::string StatusHistogram::ToString() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [code, count] : counts_) {
    out.push_back(absl::StrCat(StatusCodeName(static_cast<grpc::StatusCode>(code)), "=", count));
  }
  return absl::StrJoin(out, " ");
}

std::string StatusHistogram::ToJson() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [code, count] : counts_) {
    out.push_back(absl::StrCat("\"", StatusCodeName(static_cast<grpc::StatusCode>(code)), "\": ", count));
  }
  return absl::StrCat("{", absl::StrJoin(out, ", "), "}");
}

void StatusHistogram::Merge(const StatusHistogram& other) {
  std::map<int, int> theirs;
  {
    std::lock_guard<std::mutex> lock(other.mu_);
    theirs = other.counts_;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [code, count] : theirs) counts_[code] += count;
}

void StatusHistogram::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  counts_.clear();
}

double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(q * values.size()));
  return values[std::clamp<size_t>(rank, 1, values.size()) - 1];
}

double Slope(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = std::min(x.size(), y.size());
  if (n < 2) return 0;
  const double mx = std::accumulate(x.begin(), x.begin() + n, 0.0) / n;
  const double my = std::accumulate(y.begin(), y.begin() + n, 0.0) / n;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
  }
  return sxx > 0 ? sxy / sxx : 0;
}

StalledStream::StalledStream(const std::string& target, const v1::GenerateRequest& request, absl::Duration timeout,
                             int window_bytes) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, window_bytes);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt("medusa.test.stalled", 1);  // never share a connection with a reading client
  channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Generator::NewStub(channel_);
  if (timeout != absl::InfiniteDuration()) context_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  reader_ = stub_->Generate(&context_, request);
}

StalledStream::~StalledStream() { Finish(); }

grpc::Status StalledStream::Finish() {
  if (!status_) {
    context_.TryCancel();
    status_ = reader_->Finish();
  }
  return *status_;
}

SteadyClient::SteadyClient(std::unique_ptr<v1::Generator::Stub> stub, v1::GenerateRequest request)
    : stub_(std::move(stub)), request_(std::move(request)), thread_([this] { Run(); }) {}

SteadyClient::~SteadyClient() { Stop(); }

void SteadyClient::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::vector<double> SteadyClient::gaps_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return gaps_ms_;
}

void SteadyClient::Run() {
  while (!stop_) {
    StreamOutcome out = RunGenerate(*stub_, request_);
    statuses_.Add(out.status.error_code());
    ++streams_;
    // Refused (a full queue): a well-behaved client backs off before it tries again.
    if (!out.status.ok()) absl::SleepFor(absl::Milliseconds(50));
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 1; i < out.arrivals.size(); ++i) {
      gaps_ms_.push_back(absl::ToDoubleMilliseconds(out.arrivals[i] - out.arrivals[i - 1]));
    }
  }
}

std::unique_ptr<ChildProcess> StartClientProcess(const std::string& address, const std::string& prompt, int max_tokens,
                                                 const std::string& log_path) {
  auto child = std::make_unique<ChildProcess>();
  const std::vector<std::string> argv = {BinaryPath("bin/medusa"),
                                         "client",
                                         "--addr=" + address,
                                         "--prompt=" + prompt,
                                         absl::StrCat("--max-tokens=", max_tokens),
                                         "--ignore-eos"};
  if (!child->Start(argv, {}, log_path)) return nullptr;
  return child;
}

}  // namespace medusa::testing
