#include "server/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace medusa::server {
namespace {

std::string Unbracketed(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
  return host;
}

}  // namespace

std::string HostPort(const std::string& host, int port) {
  const bool ipv6_literal = host.find(':') != std::string::npos && host.front() != '[';
  return ipv6_literal ? absl::StrCat("[", host, "]:", port) : absl::StrCat(host, ":", port);
}

bool IsLoopbackHost(const std::string& host) {
  const std::string bare = Unbracketed(host);
  if (absl::AsciiStrToLower(bare) == "localhost") return true;
  in_addr v4 = {};
  if (inet_pton(AF_INET, bare.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6 = {};
  if (inet_pton(AF_INET6, bare.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

}  // namespace medusa::server
