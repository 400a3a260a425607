#include "tools/generator_client.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"
#include "kernels/base/status_macros.h"

namespace medusa::tools {

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrFormat("%s: %s", what, status.error_message()));
}

namespace {

// Certificates, keys and tokens are small: a larger file is a mistake (or /dev/zero).
constexpr off_t kMaxCredentialFileBytes = 1 << 20;

absl::StatusOr<std::string> ReadCredentialFile(const std::string& path, const std::string& flag) {
  struct stat st = {};
  if (stat(path.c_str(), &st) != 0) return absl::InvalidArgumentError(absl::StrFormat("%s %s: not found", flag, path));
  if (!S_ISREG(st.st_mode) || st.st_size > kMaxCredentialFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s %s: not a regular file of at most %d bytes", flag, path, kMaxCredentialFileBytes));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::InvalidArgumentError(absl::StrFormat("%s %s: cannot be read", flag, path));
  return text.str();
}

// Adds `authorization: Bearer <token>` to every call of the channel. (gRPC's own token
// credentials are sent only over TLS; the server may take a token over plaintext on
// loopback.)
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string& header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", header_);
    }
    methods->Proceed();
  }

 private:
  const std::string& header_;
};

class BearerTokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token) : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(const ServerConnection& server) {
  if (server.tls_ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions tls;
  ASSIGN_OR_RETURN(tls.pem_root_certs, ReadCredentialFile(server.tls_ca_file, "--tls-ca-file"));
  if (!server.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(tls.pem_cert_chain, ReadCredentialFile(server.tls_cert_file, "--tls-cert-file"));
    ASSIGN_OR_RETURN(tls.pem_private_key, ReadCredentialFile(server.tls_key_file, "--tls-key-file"));
  }
  return grpc::SslCredentials(tls);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ServerConnection& server) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials, ChannelCredentialsFor(server));
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!server.auth_token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, ReadCredentialFile(server.auth_token_file, "--auth-token-file"));
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
    if (token.empty()) return absl::InvalidArgumentError("--auth-token-file " + server.auth_token_file + ": empty");
    interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(std::move(token)));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  // The channel argument, not a default service config: it wins over a config the resolver
  // returns, so the flag always means what it says.
  args.SetLoadBalancingPolicyName(server.lb_policy);
  return grpc::experimental::CreateCustomChannelWithInterceptors(server.addr, credentials, args,
                                                                 std::move(interceptors));
}

absl::StatusOr<std::unique_ptr<v1::Generator::Stub>> Connect(const ServerConnection& server) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, OpenChannel(server));
  return v1::Generator::NewStub(channel);
}

namespace {

// --acceptance as the API's enum (the names `medusa generate` takes; flags.cc checked it).
v1::SamplingAcceptance AcceptanceOf(const std::string& name) {
  return name == "rejection" ? v1::SAMPLING_ACCEPTANCE_REJECTION : v1::SAMPLING_ACCEPTANCE_TYPICAL;
}

}  // namespace

v1::GenerateRequest RequestFor(const PromptSpec& spec, bool chat, const RequestFlags& flags) {
  v1::GenerateRequest request;
  if (!spec.messages.empty() || chat) {
    std::vector<ChatMessage> messages = spec.messages;
    if (messages.empty()) messages.push_back({"user", spec.text});
    for (const ChatMessage& m : messages) {
      v1::ChatMessage* out = request.mutable_chat()->add_messages();
      out->set_role(m.role);
      out->set_content(m.content);
    }
  } else {
    request.set_prompt(spec.text);
  }
  request.set_max_tokens(flags.max_tokens);
  request.set_temperature(static_cast<float>(flags.temperature));
  request.set_top_p(static_cast<float>(flags.top_p));
  request.set_top_k(flags.top_k);
  request.set_seed(flags.seed);
  for (const std::string& stop : flags.stop) request.add_stop(stop);
  request.set_ignore_eos(flags.ignore_eos);
  request.set_medusa(!flags.no_medusa);
  request.set_typical_epsilon(static_cast<float>(flags.typical_epsilon));
  request.set_typical_delta(static_cast<float>(flags.typical_delta));
  request.set_acceptance(AcceptanceOf(flags.acceptance));
  return request;
}

absl::StatusOr<StreamResult> RunStream(v1::Generator::Stub& stub, const v1::GenerateRequest& request,
                                       const TextSink& on_text) {
  grpc::ClientContext context;
  StreamResult result;
  const absl::Time start = absl::Now();
  absl::Time last = start;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    const absl::Time now = absl::Now();
    const int n = response.token_ids_size();
    if (n > 0) {
      if (result.token_ids.empty()) {
        result.ttft_ms = absl::ToDoubleMilliseconds(now - start);
      } else {
        result.itl_ms.insert(result.itl_ms.end(), n, absl::ToDoubleMilliseconds(now - last) / n);
      }
      last = now;
    }
    result.token_ids.insert(result.token_ids.end(), response.token_ids().begin(), response.token_ids().end());
    result.text += response.text();
    if (on_text && !response.text().empty()) on_text(response.text());
    if (response.has_finish()) result.finish = response.finish();
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish(), "Generate"));
  result.e2e_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  return result;
}


absl::StatusOr<v1::ModelInfo> GetModelInfo(v1::Generator::Stub& stub) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  RETURN_IF_ERROR(FromGrpc(stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info), "GetModelInfo"));
  return info;
}

}  // namespace medusa::tools
