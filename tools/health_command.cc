// `medusa health`: one call to a medusa-server's gRPC health service (grpc.health.v1), the
// check a container's HEALTHCHECK or a script runs. Exit 0 when the service is SERVING; 1,
// with the answer or the failure on stderr, otherwise (NOT_SERVING while the model loads or the
// server drains, an unknown service, nothing listening, no answer within --timeout-seconds).

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/generator_client.h"

namespace medusa::tools {

int RunHealth(const HealthCommand& command) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = OpenChannel(command.server);
  if (!channel.ok()) return Fail(channel.status());
  std::unique_ptr<grpc::health::v1::Health::Stub> stub = grpc::health::v1::Health::NewStub(*channel);
  grpc::ClientContext context;
  // No wait-for-ready: a refused connection fails the check at once instead of being retried
  // until the deadline, so "nothing listening" is told apart from "no answer in time".
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::microseconds(static_cast<int64_t>(command.timeout_seconds * 1e6)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(command.service);
  grpc::health::v1::HealthCheckResponse response;
  const std::string what = "health of " + command.server.addr + " (service \"" + command.service + "\")";
  if (absl::Status s = FromGrpc(stub->Check(&context, request, &response), what); !s.ok()) {
    // InvalidArgument would mean exit 2 ("bad flags"): an answer from the server is never that.
    std::fprintf(stderr, "medusa: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const std::string status = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::fprintf(stderr, "medusa: %s: %s\n", what.c_str(), status.c_str());
    return 1;
  }
  std::printf("%s\n", status.c_str());
  return 0;
}

}  // namespace medusa::tools
