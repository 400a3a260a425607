#include "tests/support/raw_http2_peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

namespace medusa::testing {
namespace {

// RFC 9113 section 3.4 and the frame types of section 6.
constexpr char kClientPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr int kFrameHeaderBytes = 9;
constexpr int kSettings = 0x4;
constexpr int kPing = 0x6;
constexpr int kGoaway = 0x7;
constexpr int kAck = 0x1;

bool SendAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

enum class Read { kOk, kClosed, kTimeout };

// Reads exactly `size` bytes unless the peer closes or nothing arrives by `deadline`.
Read ReadExactly(int fd, char* data, size_t size, absl::Time deadline) {
  while (size > 0) {
    const int wait_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (wait_ms <= 0) return Read::kTimeout;
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, wait_ms);
    if (ready == 0) return Read::kTimeout;
    if (ready < 0) {
      if (errno == EINTR) continue;
      return Read::kClosed;
    }
    const ssize_t n = recv(fd, data, size, 0);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return Read::kClosed;
    if (n < 0) continue;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Read::kOk;
}

}  // namespace

std::optional<RawHttp2Peer> RawHttp2Peer::Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  RawHttp2Peer peer(fd);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return std::nullopt;
  if (!SendAll(fd, kClientPreface, sizeof(kClientPreface) - 1)) return std::nullopt;
  if (!peer.SendFrame(kSettings, 0, nullptr, 0)) return std::nullopt;
  peer.opened_ = absl::Now();
  return std::move(peer);
}

RawHttp2Peer::RawHttp2Peer(RawHttp2Peer&& other) noexcept : fd_(other.fd_), opened_(other.opened_) { other.fd_ = -1; }

RawHttp2Peer::~RawHttp2Peer() {
  if (fd_ >= 0) close(fd_);
}

bool RawHttp2Peer::SendFrame(int type, int flags, const char* payload, int length) {
  std::string frame(kFrameHeaderBytes, '\0');
  frame[0] = static_cast<char>((length >> 16) & 0xff);
  frame[1] = static_cast<char>((length >> 8) & 0xff);
  frame[2] = static_cast<char>(length & 0xff);
  frame[3] = static_cast<char>(type);
  frame[4] = static_cast<char>(flags);  // stream 0: bytes 5..8 stay zero
  if (length > 0) frame.append(payload, static_cast<size_t>(length));
  return SendAll(fd_, frame.data(), frame.size());
}

Http2PeerOutcome RawHttp2Peer::Run(absl::Duration duration, bool answer_pings) {
  Http2PeerOutcome out;
  const absl::Time deadline = absl::Now() + duration;
  for (;;) {
    unsigned char header[kFrameHeaderBytes];
    Read r = ReadExactly(fd_, reinterpret_cast<char*>(header), sizeof(header), deadline);
    std::string payload;
    if (r == Read::kOk) {
      payload.resize((size_t{header[0]} << 16) | (size_t{header[1]} << 8) | header[2]);
      r = ReadExactly(fd_, payload.data(), payload.size(), deadline);
    }
    if (r == Read::kTimeout) return out;
    if (r == Read::kClosed) {
      out.closed_after = absl::Now() - opened_;
      return out;
    }
    const int type = header[3];
    const bool ack = (header[4] & kAck) != 0;
    if (type == kGoaway) out.goaway = true;
    if (type == kSettings && !ack) SendFrame(kSettings, kAck, nullptr, 0);
    if (type == kPing && !ack) {
      ++out.pings;
      if (answer_pings) SendFrame(kPing, kAck, payload.data(), static_cast<int>(payload.size()));
    }
  }
}

}  // namespace medusa::testing
