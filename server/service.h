#pragma once
// The medusa.v1.Generator service on gRPC's callback API. Generate maps one
// scheduler request onto one server stream: text is written as steps make it
// final (one write in flight; text made meanwhile joins the next write), the last
// message carries the finish reason and usage, a cancelled or expired call cancels
// the scheduler request (which frees its KV blocks at once).
//
// Generate and Tokenize take their requests as raw bytes so that text fields can be
// checked for UTF-8 by validation.h (a field-naming INVALID_ARGUMENT) instead of
// failing in the parser.

#include <atomic>

#include "engine/engine.h"
#include "engine/scheduler/scheduler.h"
#include "medusa/v1/generator.grpc.pb.h"
#include "server/metrics.h"
#include "server/validation.h"

namespace medusa::server {

using GeneratorServiceBase = v1::Generator::WithRawCallbackMethod_Generate<
    v1::Generator::WithRawCallbackMethod_Tokenize<v1::Generator::WithCallbackMethod_GetModelInfo<v1::Generator::Service>>>;

class GeneratorService final : public GeneratorServiceBase {
 public:
  explicit GeneratorService(Metrics& metrics) : metrics_(metrics) {}

  // Starts serving requests (before: UNAVAILABLE, "loading"). The engine, the
  // scheduler and the service must outlive the gRPC server.
  void Activate(Engine& engine, Scheduler& scheduler, v1::ModelInfo info, RequestLimits limits);
  // New calls get UNAVAILABLE from now on (shutdown); running streams go on.
  void StopAccepting() { state_.store(kStopping, std::memory_order_release); }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  friend class GenerateCall;
  enum State { kLoading, kServing, kStopping };
  // OK while serving, else UNAVAILABLE saying why.
  absl::Status CheckServing() const;
  // RESOURCE_EXHAUSTED when the queue is full now: a cheap look before parsing and
  // tokenizing, so that overload is refused at little cost (Submit checks exactly).
  absl::Status CheckQueueRoom() const;

  Metrics& metrics_;
  std::atomic<State> state_{kLoading};
  // Set once by Activate, before state_ turns kServing (release/acquire).
  Engine* engine_ = nullptr;
  Scheduler* scheduler_ = nullptr;
  v1::ModelInfo info_;
  RequestLimits limits_;
};

}  // namespace medusa::server
