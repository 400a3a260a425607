#pragma once
// medusa-server's life: listen (health NOT_SERVING, Generator UNAVAILABLE while the
// model loads; medusa.v1.Liveness SERVING from here to the end), load the engine, start
// the scheduler, warm up (a short request plain and one with Medusa, which also seeds the
// step times behind medusa_step_overhead_ratio), then SERVING. Shutdown: health
// NOT_SERVING (but liveness), new calls UNAVAILABLE, running streams finish within the
// grace period, then the listeners close. With --health-port the same statuses are also
// served alone, in plaintext, on that port.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/scheduler/scheduler.h"
#include "server/credentials.h"
#include "server/metrics.h"
#include "server/service.h"

namespace grpc {
class CallbackGenericService;
class Server;
}

namespace medusa::server {

class ConnectionGate;

// Limits on each client connection (gRPC channel arguments). A duration of zero turns
// that limit off.
struct ConnectionLimits {
  absl::Duration keepalive_time = absl::Seconds(60);            // server pings an idle connection after
  absl::Duration keepalive_timeout = absl::Seconds(20);         // and closes it when no ack comes within
  absl::Duration min_client_ping_interval = absl::Seconds(10);  // client pings more often: GOAWAY
  absl::Duration max_connection_idle = absl::ZeroDuration();    // no call for this long: GOAWAY
  absl::Duration max_connection_age = absl::ZeroDuration();     // GOAWAY after; clients reconnect
  absl::Duration max_connection_age_grace = absl::Seconds(30);  // then running calls are cut
  absl::Duration handshake_timeout = absl::Seconds(10);         // TLS / HTTP/2 preface must finish
  int max_metadata_bytes = 8 << 10;                             // request headers, in all
  int max_connections = 0;  // client connections served at once (connection_gate.h); 0: no limit
};

struct ServerOptions {
  EngineOptions engine;
  SchedulerOptions scheduler;
  std::string host = "127.0.0.1";          // gRPC listener
  int port = 50051;                        // gRPC; 0 picks a free port (see port())
  std::string metrics_host = "127.0.0.1";  // Prometheus /metrics (no TLS, no token)
  int metrics_port = 9464;
  // With TLS on `port`, probes that speak only plaintext (Kubernetes' gRPC probes) ask this
  // one: the health service alone, plaintext, same statuses. 0: none.
  int health_port = 0;
  int max_concurrent_streams = 128;   // per client connection (HTTP/2 SETTINGS)
  int max_message_bytes = 4 << 20;    // largest request accepted
  absl::Duration shutdown_grace = absl::Seconds(30);
  TransportSecurity security;  // TLS, mutual TLS, bearer token
  ConnectionLimits connection;
  bool enable_reflection = false;  // gRPC server reflection (lists every service and message)
  bool expose_file_paths = false;  // GetModelInfo names the heads file and a tree file
};

class MedusaServer {
 public:
  // The health service's name for the Generator: SERVING only while Generate is served
  // (not while the model loads, nor while draining). Readiness probes ask this one.
  static constexpr char kServiceName[] = "medusa.v1.Generator";
  // A health name that only says the process is up and answering: SERVING from the moment
  // the server listens, through loading and the drain. Liveness probes ask this one, so a
  // slow model load or a drain is never mistaken for a hung process and restarted.
  static constexpr char kLivenessName[] = "medusa.v1.Liveness";

  // Opens both ports. InvalidArgument for a bad TLS or token file; Unavailable when a port
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<MedusaServer>> Start(const ServerOptions& options);
  ~MedusaServer();

  // Loads the model, starts the scheduler, warms up, then turns SERVING.
  absl::Status LoadModel();
  // Graceful shutdown (once; later calls return at once). True when every running
  // stream finished within the grace period (the rest end UNAVAILABLE).
  bool Shutdown();

  int port() const { return port_; }
  int health_port() const { return health_port_; }  // 0 without --health-port
  Metrics& metrics() { return *metrics_; }

 private:
  explicit MedusaServer(const ServerOptions& options);
  // Runs one short greedy request through the scheduler and waits for it.
  absl::Status WarmUpRequest(bool medusa);
  v1::ModelInfo BuildModelInfo(const RequestLimits& limits) const;
  void SetServing(bool serving);

  ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<GeneratorService> service_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Scheduler> scheduler_;  // after engine_: destroyed first
  std::unique_ptr<ConnectionGate> gate_;  // with --max-connections: closed after gRPC
  std::unique_ptr<grpc::Server> server_;  // last: shut down before everything it calls
  std::unique_ptr<grpc::CallbackGenericService> health_only_;  // outlives health_server_
  std::unique_ptr<grpc::Server> health_server_;                // --health-port: the health service alone
  int port_ = 0;
  int health_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace medusa::server
