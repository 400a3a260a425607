#pragma once
// absl::Status <-> gRPC status. Both follow google.rpc.Code, so every code maps to
// the gRPC code of the same name (ResourceExhausted to RESOURCE_EXHAUSTED, and so
// on); the message travels unchanged.

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace medusa::server {

grpc::Status ToGrpcStatus(const absl::Status& status);

// The code as a Prometheus label value: "ok", "invalid_argument", "cancelled", ...
std::string StatusLabel(absl::StatusCode code);

}  // namespace medusa::server
