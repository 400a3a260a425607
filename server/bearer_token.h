#pragma once
// --auth-token-file: every call but the health service's must carry
// `authorization: Bearer <token>`; others end UNAUTHENTICATED before reaching a handler.
// The check runs in gRPC's server auth filter (an AuthMetadataProcessor), so it covers the
// Generator, reflection and any method added later, over TLS and plaintext alike
// (credentials.h attaches it). The token is compared in constant time: both sides are
// hashed with SHA-256 and the digests compared with CRYPTO_memcmp, so neither the
// position of the first differing byte nor the token's length shows in the timing. The
// token is never logged, and the `authorization` entry is removed from the call's metadata
// once checked, so handlers never see it.

#include <array>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_metadata_processor.h"

namespace medusa::server {

class BearerTokenAuth final : public grpc::AuthMetadataProcessor {
 public:
  // The largest token file read.
  static constexpr size_t kMaxFileBytes = 4096;

  // Reads the token once: trailing newlines are stripped; an empty token, one with bytes
  // outside printable ASCII (it travels in an HTTP/2 header) or a file that is not a small
  // regular file is InvalidArgument naming the flag.
  static absl::StatusOr<std::shared_ptr<BearerTokenAuth>> FromFile(const std::string& path);
  explicit BearerTokenAuth(absl::string_view token);

  // Calls to these methods need no token: health probes ("/grpc.health.v1.Health/Check").
  static bool IsOpenMethod(absl::string_view path);
  // OK when `path` is open or `authorization` is "Bearer <the token>" (scheme in any case).
  bool Allows(absl::string_view path, absl::string_view authorization) const;

  // Runs inline on gRPC's thread: the check is a hash and a compare.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata, OutputMetadata* response_metadata) override;

 private:
  std::array<unsigned char, 32> digest_;  // SHA-256 of the token
};

}  // namespace medusa::server
