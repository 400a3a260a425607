// medusa-server: serves medusa.v1.Generator over gRPC, Prometheus metrics on their
// own port. Every flag can also come from the environment as MEDUSA_<FLAG>
// (MEDUSA_PORT=50052, MEDUSA_KV_CACHE_MB=1024); the command line wins.
// SIGTERM / SIGINT: graceful shutdown (exit 0); a second signal exits at once (1). A signal
// while the model loads ends the process at once, exit 0 (nothing is being served yet).
// Bad flags or security files: exit 2 before anything listens.

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "kernels/base/status_macros.h"
#include "server/flags_env.h"
#include "server/listen_address.h"
#include "server/logging.h"
#include "server/server.h"
#include "spdlog/spdlog.h"
#include "tools/engine_flags.h"

ABSL_FLAG(std::string, host, "127.0.0.1",
          "Address the gRPC listener binds to. Other than loopback (127.0.0.0/8, ::1, localhost) it needs TLS "
          "or --auth-token-file, or --allow-insecure");
ABSL_FLAG(int32_t, port, 50051, "gRPC port (0: any free port)");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1", "Address the Prometheus /metrics listener binds to");
ABSL_FLAG(int32_t, metrics_port, 9464, "Prometheus /metrics port");
ABSL_FLAG(int32_t, health_port, 0,
          "Also serve the gRPC health service alone, in plaintext, on this port of --host (for probes that "
          "speak no TLS, such as Kubernetes' gRPC probes, beside a TLS --port); 0: none");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM certificate chain: serve gRPC over TLS (with --tls-key-file)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls-cert-file (unencrypted)");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates: mutual TLS, every client must present a certificate they signed");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a bearer token (one line): every call but health checks must send "
          "`authorization: Bearer <token>`, else UNAUTHENTICATED");
ABSL_FLAG(bool, allow_insecure, false, "Allow a non-loopback --host without TLS or a token");
ABSL_FLAG(bool, enable_reflection, false, "Serve gRPC server reflection (lists services and messages)");
ABSL_FLAG(bool, expose_file_paths, false, "GetModelInfo names the heads file and the tree file");
ABSL_FLAG(double, keepalive_time_seconds, 60, "Ping a connection after this long without activity (0: never)");
ABSL_FLAG(double, keepalive_timeout_seconds, 20, "Close a connection whose ping is not answered within this");
ABSL_FLAG(double, min_client_ping_interval_seconds, 10,
          "Clients pinging more often than this (without data) are sent GOAWAY");
ABSL_FLAG(double, max_connection_idle_seconds, 0, "Close a connection after this long without calls (0: never)");
ABSL_FLAG(double, max_connection_age_seconds, 0, "Send GOAWAY to a connection this old (clients reconnect; 0: never)");
ABSL_FLAG(double, max_connection_age_grace_seconds, 30,
          "After a connection's GOAWAY for age, how long its running calls get");
ABSL_FLAG(double, handshake_timeout_seconds, 10,
          "Close a connection whose TLS handshake and HTTP/2 preface are not done within this");
ABSL_FLAG(int32_t, max_metadata_bytes, 8 << 10, "Largest request metadata (headers) accepted, in bytes");
ABSL_FLAG(int32_t, max_connections, 0,
          "Client connections served at once; one more is closed at once (UNAVAILABLE). 0: no limit. When set, "
          "connections are relayed to gRPC through a private Unix socket");
ABSL_FLAG(int32_t, max_running, 16, "Sequences decoded together in one batch");
ABSL_FLAG(int32_t, max_waiting, 64,
          "Requests waiting for a place in the batch; beyond, Generate answers RESOURCE_EXHAUSTED");
ABSL_FLAG(int32_t, medusa_max_batch, 4,
          "With a fixed --tree: verify the tree while at most this many sequences decode, plain decoding "
          "above (--tree auto decides per batch size from measurements instead)");
ABSL_FLAG(int32_t, overhead_probe_every, 0,
          "Every N steps that would verify a Medusa tree for greedy sequences only, decode one plainly (0: never), "
          "so that medusa_step_overhead_ratio has recent plain steps to compare with where traffic has none; "
          "greedy output is unchanged, sampled requests are never probed");
ABSL_FLAG(int32_t, max_concurrent_streams, 128, "Concurrent streams per client connection");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20, "Largest request message, in bytes");
ABSL_FLAG(std::string, log_format, "text", "Log format: text or json (one object per line)");
ABSL_FLAG(std::string, log_level, "info", "Log level: trace, debug, info, warn, error");
ABSL_FLAG(double, shutdown_grace_seconds, 30,
          "On SIGTERM/SIGINT, how long running streams get to finish before they are cut");

namespace {

constexpr char kUsage[] =
    "medusa-server --model PATH [--heads PATH] [--tree NAME|FILE|auto] [--port 50051]\n"
    "  [--metrics-port 9464] [--health-port N] [--threads N] [--kv-cache-mb MB] [--max-running N] [--max-waiting N]\n"
    "  [--medusa-max-batch N] [--max-concurrent-streams N] [--max-message-bytes N] [--log-format text|json] "
    "[--log-level L]\n"
    "  [--shutdown-grace-seconds S] [--host 127.0.0.1] [--metrics-host 127.0.0.1]\n"
    "  [--tls-cert-file PEM --tls-key-file PEM [--tls-client-ca-file PEM]] [--auth-token-file FILE]\n"
    "  [--allow-insecure] [--enable-reflection] [--expose-file-paths] [connection limits, see --help]\n"
    "Serves medusa.v1.Generator (gRPC, with health) and Prometheus metrics.\n"
    "Flags take dashes or underscores (--kv-cache-mb, --kv_cache_mb). Every flag can be set from the\n"
    "environment as MEDUSA_<FLAG>, e.g. MEDUSA_PORT=50052; the command line wins.";

// The files whose flags are the server's: its own and the engine's.
constexpr absl::string_view kFlagsFiles[] = {"server/main.cc", medusa::tools::kEngineFlagsFile};

bool IsServerFlagsFile(absl::string_view file) {
  for (absl::string_view f : kFlagsFiles) {
    if (absl::StrContains(file, f)) return true;
  }
  return false;
}

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "medusa-server: %s\n", message.c_str());
  return code;
}

// The longest duration gRPC takes (milliseconds in an int).
constexpr double kMaxLimitSeconds = 2147483;
// Each admitted connection is a relay thread.
constexpr int kMaxConnections = 10000;

// Checks the connection limits' flags; "" when they are fine.
std::string CheckConnectionFlags() {
  for (auto [name, value] :
       {std::pair{"--keepalive-time-seconds", absl::GetFlag(FLAGS_keepalive_time_seconds)},
        std::pair{"--keepalive-timeout-seconds", absl::GetFlag(FLAGS_keepalive_timeout_seconds)},
        std::pair{"--min-client-ping-interval-seconds", absl::GetFlag(FLAGS_min_client_ping_interval_seconds)},
        std::pair{"--max-connection-idle-seconds", absl::GetFlag(FLAGS_max_connection_idle_seconds)},
        std::pair{"--max-connection-age-seconds", absl::GetFlag(FLAGS_max_connection_age_seconds)},
        std::pair{"--max-connection-age-grace-seconds", absl::GetFlag(FLAGS_max_connection_age_grace_seconds)},
        std::pair{"--handshake-timeout-seconds", absl::GetFlag(FLAGS_handshake_timeout_seconds)}}) {
    if (!(value >= 0 && value <= kMaxLimitSeconds)) {
      return absl::StrCat(name, " must be in [0, ", kMaxLimitSeconds, "], got ", value);
    }
  }
  const int connections = absl::GetFlag(FLAGS_max_connections);
  if (connections < 0 || connections > kMaxConnections) {
    return absl::StrCat("--max-connections must be in [0, ", kMaxConnections, "], got ", connections);
  }
  const int metadata = absl::GetFlag(FLAGS_max_metadata_bytes);
  if (metadata < 1024 || metadata > (16 << 20)) {
    return absl::StrCat("--max-metadata-bytes must be in [1024, ", 16 << 20, "], got ", metadata);
  }
  return "";
}

// Checks the flags' values; "" when they are fine.
std::string CheckFlags() {
  for (auto [name, port] :
       {std::pair{"--port", absl::GetFlag(FLAGS_port)}, std::pair{"--metrics-port", absl::GetFlag(FLAGS_metrics_port)},
        std::pair{"--health-port", absl::GetFlag(FLAGS_health_port)}}) {
    if (port < 0 || port > 65535) return absl::StrCat(name, " must be in [0, 65535], got ", port);
  }
  for (auto [name, value] : {std::pair{"--max-running", absl::GetFlag(FLAGS_max_running)},
                             std::pair{"--max-concurrent-streams", absl::GetFlag(FLAGS_max_concurrent_streams)},
                             std::pair{"--max-message-bytes", absl::GetFlag(FLAGS_max_message_bytes)}}) {
    if (value < 1) return absl::StrCat(name, " must be >= 1, got ", value);
  }
  if (absl::GetFlag(FLAGS_max_waiting) < 0) return "--max-waiting must be >= 0";
  if (absl::GetFlag(FLAGS_medusa_max_batch) < 1) return "--medusa-max-batch must be >= 1";
  if (absl::GetFlag(FLAGS_overhead_probe_every) < 0) return "--overhead-probe-every must be >= 0";
  if (!(absl::GetFlag(FLAGS_shutdown_grace_seconds) >= 0)) return "--shutdown-grace-seconds must be >= 0";
  return CheckConnectionFlags();
}

medusa::server::ConnectionLimits ConnectionLimitsFromFlags() {
  medusa::server::ConnectionLimits limits;
  limits.keepalive_time = absl::Seconds(absl::GetFlag(FLAGS_keepalive_time_seconds));
  limits.keepalive_timeout = absl::Seconds(absl::GetFlag(FLAGS_keepalive_timeout_seconds));
  limits.min_client_ping_interval = absl::Seconds(absl::GetFlag(FLAGS_min_client_ping_interval_seconds));
  limits.max_connection_idle = absl::Seconds(absl::GetFlag(FLAGS_max_connection_idle_seconds));
  limits.max_connection_age = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_seconds));
  limits.max_connection_age_grace = absl::Seconds(absl::GetFlag(FLAGS_max_connection_age_grace_seconds));
  limits.handshake_timeout = absl::Seconds(absl::GetFlag(FLAGS_handshake_timeout_seconds));
  limits.max_metadata_bytes = absl::GetFlag(FLAGS_max_metadata_bytes);
  limits.max_connections = absl::GetFlag(FLAGS_max_connections);
  return limits;
}

// The server's options from its flags; InvalidArgument naming a bad one.
absl::StatusOr<medusa::server::ServerOptions> OptionsFromFlags() {
  if (std::string problem = CheckFlags(); !problem.empty()) return absl::InvalidArgumentError(problem);
  medusa::server::ServerOptions options;
  ASSIGN_OR_RETURN(options.engine, medusa::tools::EngineOptionsFromFlags());
  if (options.engine.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  options.scheduler.max_running = absl::GetFlag(FLAGS_max_running);
  // --tree auto without this machine's measurement times the trees at start-up, for
  // the batch sizes the scheduler will run.
  options.engine.auto_tree_batch_sizes.clear();
  for (int b = 1; b < options.scheduler.max_running; b *= 2) options.engine.auto_tree_batch_sizes.push_back(b);
  options.engine.auto_tree_batch_sizes.push_back(options.scheduler.max_running);
  options.scheduler.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  options.scheduler.medusa_max_batch = absl::GetFlag(FLAGS_medusa_max_batch);
  options.scheduler.plain_probe_every = absl::GetFlag(FLAGS_overhead_probe_every);
  options.host = absl::GetFlag(FLAGS_host);
  options.port = absl::GetFlag(FLAGS_port);
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.health_port = absl::GetFlag(FLAGS_health_port);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.shutdown_grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds));
  options.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  options.security.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.security.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.security.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.security.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.enable_reflection = absl::GetFlag(FLAGS_enable_reflection);
  options.expose_file_paths = absl::GetFlag(FLAGS_expose_file_paths);
  options.connection = ConnectionLimitsFromFlags();
  if (!medusa::server::IsLoopbackHost(options.host) && !options.security.tls() && !options.security.token() &&
      !absl::GetFlag(FLAGS_allow_insecure)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--host ", options.host,
        " is not a loopback address: anyone who reaches it could use the server. Serve over TLS "
        "(--tls-cert-file, --tls-key-file), require a token (--auth-token-file), or pass --allow-insecure"));
  }
  return options;
}

// SIGTERM and SIGINT go through a pipe to a watching thread (a handler may do little
// else; and libraries such as OpenBLAS start threads before main, so masking the
// signals and waiting for them would not catch them all). The first asks for a
// graceful shutdown, a second one ends the process at once. main blocks both before it
// starts any thread, and only the watcher unblocks them, so the kernel hands them to the
// watcher (or to a thread some library started before main), never to a thread of ours or
// gRPC's. That matters under ThreadSanitizer, which defers a handler until the thread the
// signal landed on next calls into libc: main, asleep in a raw futex wait until shutdown,
// never did, and the signal was never handled.
int signal_pipe[2] = {-1, -1};

// Until the model has loaded, a signal ends the process at once: loading cannot be
// interrupted, and there is nothing to drain. The watcher and main agree on which of the
// two happens through one compare-and-swap.
enum Phase : int { kLoading, kServing, kExitingWhileLoading };
std::atomic<int> phase{kLoading};

sigset_t ShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  return signals;
}

void OnSignal(int signal) {
  const char byte = static_cast<char>(signal);
  [[maybe_unused]] ssize_t ignored = write(signal_pipe[1], &byte, 1);
}

// The next signal number the handler wrote. It waits in poll() before reading: ThreadSanitizer
// runs a handler at once only for a signal that lands in a call it knows to block (poll is one,
// read is not); otherwise it waits for the thread's next libc call, which here never comes.
char NextSignal() {
  char signal = 0;
  for (;;) {
    pollfd ready = {signal_pipe[0], POLLIN, 0};
    if (poll(&ready, 1, -1) == 1 && read(signal_pipe[0], &signal, 1) == 1) return signal;
  }
}

bool WatchSignals(absl::Notification* shutdown) {
  if (pipe(signal_pipe) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (sigaction(SIGTERM, &action, nullptr) != 0 || sigaction(SIGINT, &action, nullptr) != 0) return false;
  std::thread([shutdown] {
    sigset_t signals = ShutdownSignals();
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    char signal = NextSignal();
    int loading = kLoading;
    if (phase.compare_exchange_strong(loading, kExitingWhileLoading)) {
      spdlog::warn("signal {} while loading the model: exiting without serving", static_cast<int>(signal));
      spdlog::default_logger()->flush();
      std::_Exit(0);
    }
    spdlog::info("signal {}: shutting down", static_cast<int>(signal));
    shutdown->Notify();
    signal = NextSignal();
    spdlog::warn("signal {} during shutdown: exiting now", static_cast<int>(signal));
    std::_Exit(1);
  }).detach();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread of ours starts: they inherit the mask (see WatchSignals).
  const sigset_t shutdown_signals = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = IsServerFlagsFile;
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);

  if (absl::Status s = medusa::server::ApplyEnvironmentOverrides(IsServerFlagsFile); !s.ok()) {
    return Fail(std::string(s.message()), 2);
  }
  std::vector<std::string> args = medusa::server::DashesToUnderscores(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  if (positional.size() > 1) return Fail(absl::StrCat("unexpected argument '", positional[1], "'"), 2);
  absl::StatusOr<medusa::server::ServerOptions> options = OptionsFromFlags();
  if (!options.ok()) return Fail(std::string(options.status().message()), 2);
  if (absl::Status s = medusa::server::ConfigureLogging(absl::GetFlag(FLAGS_log_format),
                                                        absl::GetFlag(FLAGS_log_level));
      !s.ok()) {
    return Fail(std::string(s.message()), 2);
  }

  absl::Notification shutdown;
  if (!WatchSignals(&shutdown)) return Fail("cannot install the SIGTERM/SIGINT handlers", 1);

  absl::StatusOr<std::unique_ptr<medusa::server::MedusaServer>> server =
      medusa::server::MedusaServer::Start(*options);
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (absl::Status s = (*server)->LoadModel(); !s.ok()) {
    spdlog::error("cannot serve: {}", std::string(s.message()));
    return 1;
  }
  if (int loading = kLoading; !phase.compare_exchange_strong(loading, kServing)) {
    for (;;) pause();  // a signal came as loading ended: the watcher is ending the process
  }
  shutdown.WaitForNotification();
  (*server)->Shutdown();
  server->reset();
  return 0;
}
