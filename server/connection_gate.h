#pragma once
// --max-connections: a bound on the client connections served at once. gRPC 1.51 has no
// such limit (no GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS), and handing accepted sockets
// to gRPC (grpc_server_add_channel_from_fd) takes plaintext only and skips the server's
// auth filter and handshake timeout. So the gate owns the public port instead: it accepts,
// closes at once a connection past the limit (the client sees UNAVAILABLE), and relays each
// admitted one, bytes unchanged, to gRPC listening on a Unix socket in a private directory.
// TLS, the token check, keepalive and the other connection limits all still happen in gRPC;
// when gRPC closes its side (handshake timeout, idle, age, keepalive failure), the gate
// closes the client's and frees the place. The cost is one copy of each byte on loopback
// and a thread per admitted connection.

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace medusa::server {

class ConnectionGate {
 public:
  // Binds host:port (port 0: any free port) and makes the private directory of the Unix
  // socket gRPC should listen on (backend_address()). Unavailable when the port cannot be
  // bound. Nothing is accepted before Start.
  static absl::StatusOr<std::unique_ptr<ConnectionGate>> Bind(const std::string& host, int port, int max_connections);
  ~ConnectionGate();  // stops accepting, closes every relayed connection, removes the socket
  ConnectionGate(const ConnectionGate&) = delete;
  ConnectionGate& operator=(const ConnectionGate&) = delete;

  int port() const { return port_; }
  // "unix:/tmp/medusa-gate-XXXXXX/grpc.sock", for grpc::ServerBuilder::AddListeningPort.
  std::string backend_address() const { return "unix:" + socket_path_; }
  // Starts accepting (once gRPC listens on the backend address).
  void Start();
  // Connections admitted and not yet closed.
  int active() const { return active_.load(); }

 private:
  struct Relay;
  ConnectionGate(int listen_fd, int port, int max_connections, std::string dir);
  void AcceptLoop();
  void Admit(int client_fd);
  void ReapFinished();

  const int listen_fd_;
  const int port_;
  const int max_connections_;
  const std::string dir_;
  const std::string socket_path_;
  int wake_[2] = {-1, -1};  // a byte here ends AcceptLoop
  std::thread accept_thread_;
  std::atomic<int> active_{0};
  std::mutex mu_;
  std::list<std::unique_ptr<Relay>> relays_;  // guarded by mu_
};

}  // namespace medusa::server
