#include "server/credentials.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/grpc_security.h"
#include "kernels/base/status_macros.h"
#include "server/bearer_token.h"
#include "server/small_file.h"

namespace medusa::server {
namespace {

absl::Status Invalid(const std::string& flag, const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", why));
}

// OpenSSL's reason for the last failure, or `fallback`.
std::string OpenSslError(const std::string& fallback) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return fallback;
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// Never prompts for a passphrase (OpenSSL's default would read the terminal): an
// encrypted key is refused.
int NoPassphrase(char*, int, int, void*) { return -1; }

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Certificate = std::unique_ptr<X509, X509Free>;

std::unique_ptr<BIO, BioFree> Bio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in a PEM text; at least one.
absl::StatusOr<std::vector<Certificate>> ParseCertificates(const std::string& pem, const std::string& flag,
                                                           const std::string& path) {
  std::vector<Certificate> certs;
  auto bio = Bio(pem);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr)) certs.emplace_back(cert);
  ERR_clear_error();  // the read that ended the loop
  if (certs.empty()) return Invalid(flag, path, "no PEM certificate in the file");
  return certs;
}

struct TlsFiles {
  std::string cert_chain, key, client_ca;
};

absl::StatusOr<TlsFiles> ReadTlsFiles(const TransportSecurity& s) {
  if (s.tls_cert_file.empty() != s.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert-file and --tls-key-file go together: give both or neither");
  }
  if (!s.tls_client_ca_file.empty() && !s.tls()) {
    return absl::InvalidArgumentError("--tls-client-ca-file needs --tls-cert-file and --tls-key-file");
  }
  TlsFiles files;
  ASSIGN_OR_RETURN(files.cert_chain, ReadSmallFile(s.tls_cert_file, kMaxPemFileBytes, "--tls-cert-file"));
  ASSIGN_OR_RETURN(files.key, ReadSmallFile(s.tls_key_file, kMaxPemFileBytes, "--tls-key-file"));
  ASSIGN_OR_RETURN(std::vector<Certificate> chain,
                   ParseCertificates(files.cert_chain, "--tls-cert-file", s.tls_cert_file));
  auto bio = Bio(files.key);
  std::unique_ptr<EVP_PKEY, KeyFree> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    return Invalid("--tls-key-file", s.tls_key_file,
                   absl::StrCat("not an unencrypted PEM private key (", OpenSslError("no key found"), ")"));
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return Invalid("--tls-key-file", s.tls_key_file,
                   absl::StrCat("does not match the certificate in ", s.tls_cert_file));
  }
  if (!s.tls_client_ca_file.empty()) {
    ASSIGN_OR_RETURN(files.client_ca, ReadSmallFile(s.tls_client_ca_file, kMaxPemFileBytes, "--tls-client-ca-file"));
    RETURN_IF_ERROR(ParseCertificates(files.client_ca, "--tls-client-ca-file", s.tls_client_ca_file).status());
  }
  return files;
}

// Plaintext credentials that still run an AuthMetadataProcessor. gRPC's C++
// InsecureServerCredentials() refuses one (it asserts), but gRPC core runs the processor of
// any server credentials in its server auth filter, insecure ones included; this class
// attaches it through the C API. (Written against gRPC 1.51's ServerCredentials, whose
// AddPortToServer is the hook for custom credentials.)
class PlaintextWithAuth final : public grpc::ServerCredentials {
 public:
  explicit PlaintextWithAuth(std::shared_ptr<grpc::AuthMetadataProcessor> processor)
      : processor_(std::move(processor)) {}
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>& processor) override {
    processor_ = processor;
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    grpc_server_credentials* creds = grpc_insecure_server_credentials_create();
    grpc_auth_metadata_processor c_processor = {};
    c_processor.process = &Process;
    c_processor.destroy = [](void* state) { delete static_cast<std::shared_ptr<grpc::AuthMetadataProcessor>*>(state); };
    c_processor.state = new std::shared_ptr<grpc::AuthMetadataProcessor>(processor_);
    grpc_server_credentials_set_auth_metadata_processor(creds, c_processor);
    const int port = grpc_server_add_http2_port(server, addr.c_str(), creds);
    grpc_server_credentials_release(creds);
    return port;
  }

  static std::string_view View(const grpc_slice& slice) {
    return std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice));
  }

  // The C side of the processor: the metadata as the C++ processor takes it, the consumed
  // entries handed back as pointers into the caller's array.
  static void Process(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md, size_t num_md,
                      grpc_process_auth_metadata_done_cb done, void* user_data) {
    grpc::AuthMetadataProcessor& processor = **static_cast<std::shared_ptr<grpc::AuthMetadataProcessor>*>(state);
    grpc::AuthMetadataProcessor::InputMetadata input;
    for (size_t i = 0; i < num_md; ++i) {
      const std::string_view key = View(md[i].key), value = View(md[i].value);
      input.emplace(grpc::string_ref(key.data(), key.size()), grpc::string_ref(value.data(), value.size()));
    }
    grpc::AuthMetadataProcessor::OutputMetadata consumed, response;
    const grpc::Status status = processor.Process(input, nullptr, &consumed, &response);
    std::vector<grpc_metadata> consumed_md;
    for (size_t i = 0; i < num_md; ++i) {
      if (consumed.count(std::string(View(md[i].key))) > 0) consumed_md.push_back(md[i]);
    }
    done(user_data, consumed_md.data(), consumed_md.size(), nullptr, 0,
         static_cast<grpc_status_code>(status.error_code()), status.ok() ? nullptr : status.error_message().c_str());
  }

  std::shared_ptr<grpc::AuthMetadataProcessor> processor_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TransportSecurity& security) {
  std::shared_ptr<BearerTokenAuth> auth;
  if (security.token()) {
    ASSIGN_OR_RETURN(auth, BearerTokenAuth::FromFile(security.auth_token_file));
  }
  if (!security.tls() && security.tls_key_file.empty() && security.tls_client_ca_file.empty()) {
    if (auth != nullptr) return std::shared_ptr<grpc::ServerCredentials>(std::make_shared<PlaintextWithAuth>(auth));
    return grpc::InsecureServerCredentials();
  }
  ASSIGN_OR_RETURN(TlsFiles files, ReadTlsFiles(security));
  grpc::SslServerCredentialsOptions options(files.client_ca.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = files.client_ca;
  options.pem_key_cert_pairs.push_back({files.key, files.cert_chain});
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (auth != nullptr) credentials->SetAuthMetadataProcessor(auth);
  return credentials;
}

}  // namespace medusa::server
