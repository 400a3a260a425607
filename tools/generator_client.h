#pragma once
// Talking to a medusa-server (medusa.v1.Generator) as `medusa client` and `medusa bench`
// do: the request `medusa generate` would make of a prompt, and one timed stream.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/status.h"
#include "medusa/v1/generator.grpc.pb.h"
#include "tools/command_options.h"
#include "tools/prompts.h"

namespace medusa::tools {

// A gRPC status as an absl::Status, its message prefixed with `what`.
absl::Status FromGrpc(const grpc::Status& status, const std::string& what);

// A stub on a channel to `server.addr` (HOST:PORT) that takes replies of any size: over TLS
// when a CA file is given (mutual TLS with a client certificate and key), every call
// carrying `authorization: Bearer <token>` when a token file is. InvalidArgument naming the
// flag for a file that cannot be read.
absl::StatusOr<std::unique_ptr<v1::Generator::Stub>> Connect(const ServerConnection& server);
// The channel Connect makes its stub on, for other services (grpc.health.v1).
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(const ServerConnection& server);

// The request `medusa generate` would make of this prompt and the flags (`chat`: the
// model's chat template applies to a plain prompt).
v1::GenerateRequest RequestFor(const PromptSpec& spec, bool chat, const RequestFlags& flags);

// One Generate stream, timed on the client.
struct StreamResult {
  std::vector<int32_t> token_ids;
  std::string text;
  v1::Finish finish;
  double ttft_ms = 0;
  double e2e_ms = 0;
  std::vector<double> itl_ms;  // one per token after the first
};

using TextSink = std::function<void(const std::string&)>;

// Runs one stream to its end; `on_text` receives its text as it arrives.
absl::StatusOr<StreamResult> RunStream(v1::Generator::Stub& stub, const v1::GenerateRequest& request,
                                       const TextSink& on_text = nullptr);

absl::StatusOr<v1::ModelInfo> GetModelInfo(v1::Generator::Stub& stub);

}  // namespace medusa::tools
