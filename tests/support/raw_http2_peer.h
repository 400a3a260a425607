#pragma once
// An HTTP/2 client written frame by frame on a raw socket, for what a gRPC client library
// cannot be made to do: complete the connection preface and then stop answering the
// server's PING frames, as a peer behind a dead network path or a frozen process would.

#include <optional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace medusa::testing {

// What the peer saw of the server until the connection closed or the time ran out.
struct Http2PeerOutcome {
  int pings = 0;                               // PING frames the server sent (not acks)
  bool goaway = false;                         // a GOAWAY frame arrived
  std::optional<absl::Duration> closed_after;  // since the preface, when the server closed
};

class RawHttp2Peer {
 public:
  // Connects to the loopback port and sends the client preface with an empty SETTINGS
  // frame; nullopt when the connection fails.
  static std::optional<RawHttp2Peer> Connect(int port);
  RawHttp2Peer(RawHttp2Peer&& other) noexcept;
  RawHttp2Peer& operator=(RawHttp2Peer&&) = delete;
  ~RawHttp2Peer();

  // Reads frames for up to `duration` or until the server closes the connection,
  // acknowledging the server's SETTINGS always and its PINGs only when `answer_pings`.
  Http2PeerOutcome Run(absl::Duration duration, bool answer_pings);

 private:
  explicit RawHttp2Peer(int fd) : fd_(fd), opened_(absl::Now()) {}
  bool SendFrame(int type, int flags, const char* payload, int length);

  int fd_;
  absl::Time opened_;
};

}  // namespace medusa::testing
