#include "server/connection_gate.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace medusa::server {
namespace {

// A client that stops reading blocks its relay's writes at most this long; then the
// connection is closed (gRPC's own keepalive cannot reach it through a blocked relay).
constexpr int kClientSendTimeoutSeconds = 120;
constexpr size_t kRelayBuffer = 64 << 10;

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

int ConnectUnix(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Copies bytes both ways until gRPC closes its side (then the client's is closed too: a
// client that never closes must not keep its place) or the client closes both of its.
void RunRelay(int client, int backend) {
  char buffer[kRelayBuffer];
  bool client_open = true;  // still reading from the client
  for (;;) {
    pollfd fds[2] = {{backend, POLLIN, 0}, {client, static_cast<short>(client_open ? POLLIN : 0), 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents != 0) {
      const ssize_t n = recv(backend, buffer, sizeof(buffer), 0);
      if (n <= 0 || !WriteAll(client, buffer, static_cast<size_t>(n))) return;
    }
    if (fds[1].revents != 0) {
      const ssize_t n = recv(client, buffer, sizeof(buffer), 0);
      if (n < 0) return;
      if (n == 0) {
        client_open = false;  // the client is done sending: tell gRPC, keep its replies flowing
        shutdown(backend, SHUT_WR);
      } else if (!WriteAll(backend, buffer, static_cast<size_t>(n))) {
        return;
      }
    }
  }
}

}  // namespace

struct ConnectionGate::Relay {
  int client = -1;
  int backend = -1;
  std::atomic<bool> finished{false};
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<ConnectionGate>> ConnectionGate::Bind(const std::string& host, int port,
                                                                     int max_connections) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string bare = host;
  if (bare.size() >= 2 && bare.front() == '[' && bare.back() == ']') bare = bare.substr(1, bare.size() - 2);
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = getaddrinfo(bare.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve --host ", host, ": ", gai_strerror(rc)));
  }
  int fd = -1;
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
      why = std::strerror(errno);
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port, " (", why, ")"));
  sockaddr_storage bound = {};
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const int bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  // A directory only this user can enter: nobody else reaches gRPC around the gate.
  std::string dir = (std::filesystem::temp_directory_path() / "medusa-gate-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot make a directory for the gate's socket: ", std::strerror(errno)));
  }
  return std::unique_ptr<ConnectionGate>(new ConnectionGate(fd, bound_port, max_connections, dir));
}

ConnectionGate::ConnectionGate(int listen_fd, int port, int max_connections, std::string dir)
    : listen_fd_(listen_fd),
      port_(port),
      max_connections_(max_connections),
      dir_(std::move(dir)),
      socket_path_(dir_ + "/grpc.sock") {
  if (pipe2(wake_, O_CLOEXEC) != 0) wake_[0] = wake_[1] = -1;
}

ConnectionGate::~ConnectionGate() {
  if (accept_thread_.joinable()) {
    const char byte = 0;
    [[maybe_unused]] ssize_t ignored = write(wake_[1], &byte, 1);
    accept_thread_.join();
  }
  close(listen_fd_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& relay : relays_) {
      if (relay->finished) continue;
      shutdown(relay->client, SHUT_RDWR);
      shutdown(relay->backend, SHUT_RDWR);
    }
  }
  for (auto& relay : relays_) relay->thread.join();
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void ConnectionGate::Start() {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

void ConnectionGate::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("connection gate: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;  // the peer gave up, or out of descriptors for a moment
    ReapFinished();
    if (active_.load() >= max_connections_) {
      spdlog::debug("connection gate: {} connections open (--max-connections): refusing one", max_connections_);
      close(client);
      continue;
    }
    Admit(client);
  }
}

void ConnectionGate::Admit(int client) {
  const int backend = ConnectUnix(socket_path_);
  if (backend < 0) {
    close(client);
    return;
  }
  const timeval send_timeout = {kClientSendTimeoutSeconds, 0};
  setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
  auto relay = std::make_unique<Relay>();
  relay->client = client;
  relay->backend = backend;
  Relay* r = relay.get();
  ++active_;
  std::lock_guard<std::mutex> lock(mu_);
  relay->thread = std::thread([this, r] {
    RunRelay(r->client, r->backend);
    // Under the lock: the destructor shuts down the descriptors of unfinished relays only,
    // and a closed descriptor's number may already belong to someone else.
    std::lock_guard<std::mutex> lock(mu_);
    close(r->client);
    close(r->backend);
    --active_;
    r->finished = true;
  });
  relays_.push_back(std::move(relay));
}

void ConnectionGate::ReapFinished() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = relays_.begin(); it != relays_.end();) {
    if ((*it)->finished) {
      (*it)->thread.join();
      it = relays_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace medusa::server
