#pragma once
// Talking to servers on this machine's loopback interface: free ports, connection
// checks, a plain HTTP GET, and reading one series of a Prometheus text exposition.

#include <optional>
#include <string>

#include "absl/time/time.h"

namespace medusa::testing {

// A loopback port nobody listens on now (the kernel's choice for port 0).
int FreePort();

// Whether something listens on the loopback port.
bool Accepts(int port);

// A TCP connection to the loopback port that sends nothing (a stalled client); its file
// descriptor (the caller closes it), or -1.
int OpenIdleConnection(int port);

// GET http://127.0.0.1:port/target over HTTP/1.0; the body, or nullopt when the
// connection fails, the status is not 200 or no byte arrives for `timeout`.
std::optional<std::string> HttpGet(int port, const std::string& target,
                                   absl::Duration timeout = absl::InfiniteDuration());

// Percent-encoding of a URL query value.
std::string UrlEncode(const std::string& text);

// The value of one series in a text exposition ("medusa_requests_total{status=\"ok\"}"),
// or nullopt when absent.
std::optional<double> MetricValue(const std::string& exposition, const std::string& series);

}  // namespace medusa::testing
