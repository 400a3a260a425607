#pragma once
// Listening addresses: "host:port" for gRPC and civetweb (IPv6 literals in brackets), and
// whether a host is this machine's loopback, where serving without TLS or a token is safe.

#include <string>

namespace medusa::server {

// "127.0.0.1", 50051 -> "127.0.0.1:50051"; "::1" -> "[::1]:50051" ("[::1]" stays as given).
std::string HostPort(const std::string& host, int port);

// True for "localhost", any 127.0.0.0/8 address and ::1 (with or without brackets); false for
// wildcard addresses (0.0.0.0, ::), other addresses and other names.
bool IsLoopbackHost(const std::string& host);

}  // namespace medusa::server
