#include "server/bearer_token.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/small_file.h"

namespace medusa::server {
namespace {

constexpr absl::string_view kScheme = "Bearer ";

std::array<unsigned char, 32> Sha256(absl::string_view data) {
  std::array<unsigned char, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest.data());
  return digest;
}

}  // namespace

absl::StatusOr<std::shared_ptr<BearerTokenAuth>> BearerTokenAuth::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxFileBytes, "--auth-token-file");
  if (!text.ok()) return text.status();
  std::string token = std::move(*text);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("--auth-token-file ", path, ": empty token"));
  for (unsigned char c : token) {
    // Said without quoting the token: error messages end up in logs.
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-token-file ", path, ": the token must be printable ASCII without spaces (one line)"));
    }
  }
  return std::make_shared<BearerTokenAuth>(token);
}

BearerTokenAuth::BearerTokenAuth(absl::string_view token) : digest_(Sha256(token)) {}

bool BearerTokenAuth::IsOpenMethod(absl::string_view path) { return absl::StartsWith(path, "/grpc.health.v1.Health/"); }

bool BearerTokenAuth::Allows(absl::string_view path, absl::string_view authorization) const {
  if (IsOpenMethod(path)) return true;
  if (authorization.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  const std::array<unsigned char, 32> offered = Sha256(authorization.substr(kScheme.size()));
  return CRYPTO_memcmp(offered.data(), digest_.data(), digest_.size()) == 0;
}

grpc::Status BearerTokenAuth::Process(const InputMetadata& auth_metadata, grpc::AuthContext*,
                                      OutputMetadata* consumed_auth_metadata, OutputMetadata*) {
  auto path = auth_metadata.find(":path");
  if (path == auth_metadata.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no method path");
  const absl::string_view method(path->second.data(), path->second.size());
  auto [first, last] = auth_metadata.equal_range("authorization");
  // One authorization entry: a second one is ambiguous (which would a proxy have checked?).
  const bool one = first != last && std::next(first) == last;
  const absl::string_view authorization = one ? absl::string_view(first->second.data(), first->second.size()) : "";
  if (!Allows(method, authorization)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        first == last ? "missing bearer token (authorization metadata)" : "invalid bearer token");
  }
  for (auto it = first; it != last; ++it) {
    consumed_auth_metadata->emplace(std::string(it->first.data(), it->first.size()),
                                    std::string(it->second.data(), it->second.size()));
  }
  return grpc::Status::OK;
}

}  // namespace medusa::server
