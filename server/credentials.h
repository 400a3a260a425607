#pragma once
// The gRPC listener's credentials from the security flags: TLS (--tls-cert-file,
// --tls-key-file), mutual TLS (--tls-client-ca-file: clients must present a certificate
// that CA signed) and the bearer token (--auth-token-file, bearer_token.h). Every file is
// read and checked here, at start-up, so a bad one is a clear error before anything
// listens: PEM that does not parse, a key that does not match the certificate, a missing
// half of a pair.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace medusa::server {

struct TransportSecurity {
  std::string tls_cert_file;       // PEM certificate chain; with tls_key_file turns TLS on
  std::string tls_key_file;        // PEM private key (unencrypted)
  std::string tls_client_ca_file;  // PEM CA bundle: require and verify client certificates
  std::string auth_token_file;     // one line: the bearer token

  bool tls() const { return !tls_cert_file.empty(); }
  bool token() const { return !auth_token_file.empty(); }
};

// The largest certificate, key or CA file read.
constexpr size_t kMaxPemFileBytes = 1 << 20;

// InvalidArgument naming the flag and the file for anything wrong.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TransportSecurity& security);

}  // namespace medusa::server
