#include "server/service.h"

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/tokenizer/unicode.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "server/grpc_status.h"
#include "spdlog/spdlog.h"

namespace medusa::server {
namespace {

std::string BufferBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  bytes.reserve(buffer.Length());
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

void ToBuffer(const google::protobuf::Message& message, grpc::ByteBuffer* buffer) {
  bool own_buffer = false;
  buffer->Clear();  // the writer wants an empty buffer; ours is reused across writes
  // Serialization of an initialized message into a fresh buffer cannot fail.
  grpc::SerializationTraits<google::protobuf::Message>::Serialize(message, buffer, &own_buffer).IgnoreError();
}

absl::Time ToAbslDeadline(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

v1::FinishReason ToFinishReason(FinishReason reason) {
  return reason == FinishReason::kStop ? v1::FINISH_REASON_STOP : v1::FINISH_REASON_LENGTH;
}

}  // namespace

// One Generate stream. Lives until gRPC's OnDone; it calls Finish only after the
// scheduler's on_done, so no scheduler callback can outlive it.
class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GenerateCall(GeneratorService& service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), arrival_(absl::Now()) {}

  // Validates and submits; ends the call at once on an error.
  void Begin(const grpc::ByteBuffer& wire);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  // Scheduler thread.
  void OnText(absl::Span<const int32_t> ids, std::string_view text);
  void OnEnd(absl::StatusOr<GenerationResult> result);
  // Ends the call with `status` (before submission, or when the scheduler is done).
  void End(const absl::Status& status);
  // Starts the next write or finishes the call if there is nothing in flight. The
  // last thing a caller does: the call may be deleted by the time it returns.
  void Pump();
  void FillUsage(const GenerationResult& result, v1::Usage* usage) const;
  // Whether the call's deadline is (about to be) over. A client whose deadline passes
  // cancels the call itself, and that cancellation can reach the server a little before
  // the server's copy of the deadline (computed from the request's arrival) passes.
  bool NearDeadline() const {
    return context_->deadline() != std::chrono::system_clock::time_point::max() &&
           absl::FromChrono(context_->deadline()) - absl::Now() < kDeadlineTolerance;
  }
  static constexpr absl::Duration kDeadlineTolerance = absl::Milliseconds(250);
  void Record(const absl::Status& status, const GenerationResult* result);

  GeneratorService& service_;
  grpc::CallbackServerContext* context_;
  const absl::Time arrival_;

  std::mutex mu_;
  bool begun_ = false;             // Begin is over: Pump may act
  bool submitted_ = false;
  bool cancel_requested_ = false;  // the client went away before submission ended
  uint64_t id_ = 0;
  v1::GenerateResponse pending_;   // made since the last write started
  bool has_pending_ = false;
  grpc::ByteBuffer in_flight_;     // the write gRPC holds
  bool writing_ = false;
  bool write_failed_ = false;
  std::optional<grpc::Status> final_status_;  // set once the request is over
  bool finish_called_ = false;
  std::optional<absl::Time> first_token_;
  absl::Time last_token_;
};

void GenerateCall::Begin(const grpc::ByteBuffer& wire) {
  absl::Status status = service_.CheckServing();
  if (status.ok()) status = service_.CheckQueueRoom();
  absl::StatusOr<GenerationRequest> request;
  if (status.ok()) {
    absl::StatusOr<v1::GenerateRequest> proto = ParseGenerateRequest(BufferBytes(wire));
    if (proto.ok()) {
      request = ToGenerationRequest(*proto, service_.engine_->tokenizer(), service_.limits_);
    } else {
      request = proto.status();
    }
    status = request.status();
  }
  if (!status.ok()) {
    End(status);
    return;
  }
  const int prompt_tokens = static_cast<int>(request->prompt_ids.size());
  RequestCallbacks callbacks;
  callbacks.on_text = [this](absl::Span<const int32_t> ids, std::string_view text) { OnText(ids, text); };
  callbacks.on_done = [this](absl::StatusOr<GenerationResult> result) { OnEnd(std::move(result)); };
  absl::StatusOr<uint64_t> id =
      service_.scheduler_->Submit(*std::move(request), std::move(callbacks), ToAbslDeadline(context_->deadline()));
  if (!id.ok()) {
    End(id.status());
    return;
  }
  service_.metrics_.RequestAdmitted(prompt_tokens);
  bool cancel = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id_ = *id;
    submitted_ = true;
    cancel = cancel_requested_;
    begun_ = true;
  }
  if (cancel) service_.scheduler_->Cancel(*id);
  Pump();
}

void GenerateCall::End(const absl::Status& status) {
  Record(status, nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    final_status_ = ToGrpcStatus(status);
    begun_ = true;
  }
  Pump();
}

void GenerateCall::OnText(absl::Span<const int32_t> ids, std::string_view text) {
  if (ids.empty() && text.empty()) return;
  const absl::Time now = absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ids.empty()) {
      if (!first_token_) {
        first_token_ = now;
        service_.metrics_.FirstToken(now - arrival_);
      } else {
        service_.metrics_.TokensAfter(now - last_token_, static_cast<int>(ids.size()));
      }
      last_token_ = now;
    }
    pending_.mutable_token_ids()->Add(ids.begin(), ids.end());
    pending_.mutable_text()->append(text);
    has_pending_ = true;
  }
  // The call cannot finish before on_done, so it is still alive after Pump.
  Pump();
}

void GenerateCall::OnEnd(absl::StatusOr<GenerationResult> result) {
  absl::Status status = result.status();
  if (status.code() == absl::StatusCode::kCancelled && NearDeadline()) {
    status = absl::DeadlineExceededError("the call's deadline passed during generation");
  }
  Record(status, result.ok() ? &*result : nullptr);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (result.ok()) {
      v1::Finish* finish = pending_.mutable_finish();
      finish->set_reason(ToFinishReason(result->finish_reason));
      FillUsage(*result, finish->mutable_usage());
      has_pending_ = true;
    } else {
      pending_.Clear();  // an error ends the stream; text made meanwhile is dropped
      has_pending_ = false;
    }
    final_status_ = ToGrpcStatus(status);
  }
  Pump();
}

void GenerateCall::OnWriteDone(bool ok) {
  uint64_t cancel_id = 0;
  bool cancel = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok && !write_failed_) {
      // The client is gone: stop generating for it.
      write_failed_ = true;
      cancel = submitted_ && !final_status_;
      cancel_id = id_;
    }
  }
  if (cancel) service_.scheduler_->Cancel(cancel_id);
  Pump();
}

void GenerateCall::OnCancel() {
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_requested_ = true;
    if (!submitted_ || final_status_) return;
    id = id_;
  }
  service_.scheduler_->Cancel(id);
}

void GenerateCall::Pump() {
  enum class Action { kNone, kWrite, kWriteAndFinish, kFinish } action = Action::kNone;
  grpc::Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!begun_ || writing_ || finish_called_) return;
    if (has_pending_ && !write_failed_) {
      ToBuffer(pending_, &in_flight_);
      const bool last = final_status_.has_value();
      pending_.Clear();
      has_pending_ = false;
      if (last) {
        finish_called_ = true;
        status = *final_status_;
        action = Action::kWriteAndFinish;
      } else {
        writing_ = true;
        action = Action::kWrite;
      }
    } else if (final_status_) {
      finish_called_ = true;
      status = *final_status_;
      action = Action::kFinish;
    }
  }
  switch (action) {
    case Action::kWrite: StartWrite(&in_flight_); break;
    case Action::kWriteAndFinish: StartWriteAndFinish(&in_flight_, grpc::WriteOptions(), status); break;
    case Action::kFinish: Finish(status); break;
    case Action::kNone: break;
  }
}

void GenerateCall::FillUsage(const GenerationResult& result, v1::Usage* usage) const {
  const absl::Time now = absl::Now();
  usage->set_prompt_tokens(result.prompt_tokens);
  usage->set_generated_tokens(result.new_tokens());
  usage->set_decoding_steps(result.steps);
  usage->set_acceleration_rate(result.acceleration_rate());
  usage->set_time_to_first_token_seconds(absl::ToDoubleSeconds((first_token_ ? *first_token_ : now) - arrival_));
  usage->set_total_seconds(absl::ToDoubleSeconds(now - arrival_));
  usage->set_prefill_seconds(result.prefill_seconds);
  usage->set_decode_seconds(result.decode_seconds);
  usage->set_accepted_draft_tokens(result.accepted_tokens);
  usage->mutable_accepted_per_position()->Add(result.accepted_per_position.begin(),
                                              result.accepted_per_position.end());
  usage->mutable_accepted_length_counts()->Add(result.accepted_length_counts.begin(),
                                               result.accepted_length_counts.end());
}

void GenerateCall::Record(const absl::Status& status, const GenerationResult* result) {
  const absl::Duration duration = absl::Now() - arrival_;
  service_.metrics_.RequestFinished(status.code(), duration);
  if (result != nullptr) {
    spdlog::debug("generate peer={} status=ok prompt_tokens={} new_tokens={} steps={} finish={} seconds={:.4f}",
                  context_->peer(), result->prompt_tokens, result->new_tokens(), result->steps,
                  FinishReasonName(result->finish_reason), absl::ToDoubleSeconds(duration));
  } else {
    spdlog::debug("generate peer={} status={} seconds={:.4f} error=\"{}\"", context_->peer(),
                  StatusLabel(status.code()), absl::ToDoubleSeconds(duration), std::string(status.message()));
  }
}

// ------------------------------------------------------------------ service

void GeneratorService::Activate(Engine& engine, Scheduler& scheduler, v1::ModelInfo info,
                                RequestLimits limits) {
  engine_ = &engine;
  scheduler_ = &scheduler;
  info_ = std::move(info);
  limits_ = limits;
  state_.store(kServing, std::memory_order_release);
}

absl::Status GeneratorService::CheckQueueRoom() const {
  const SchedulerLoad load = scheduler_->load();
  const int room = info_.limits().max_running() + info_.limits().max_waiting();
  if (load.running + load.waiting < room) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrFormat("the queue is full: %d requests running or waiting (max_running %d + max_waiting %d)",
                      load.running + load.waiting, info_.limits().max_running(), info_.limits().max_waiting()));
}

absl::Status GeneratorService::CheckServing() const {
  switch (state_.load(std::memory_order_acquire)) {
    case kServing: return absl::OkStatus();
    case kLoading: return absl::UnavailableError("the server is loading its model; retry shortly");
    default: return absl::UnavailableError("the server is shutting down");
  }
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* GeneratorService::Generate(grpc::CallbackServerContext* context,
                                                                       const grpc::ByteBuffer* request) {
  auto* call = new GenerateCall(*this, context);
  call->Begin(*request);
  return call;
}

grpc::ServerUnaryReactor* GeneratorService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = CheckServing();
  absl::StatusOr<v1::TokenizeRequest> proto;
  if (status.ok()) {
    proto = ParseTokenizeRequest(BufferBytes(*request));
    status = proto.status();
  }
  absl::StatusOr<std::vector<int32_t>> ids;
  if (status.ok()) {
    ids = PromptIds(*proto, engine_->tokenizer(), limits_);
    status = ids.status();
  }
  v1::TokenizeResponse out;
  if (status.ok()) {
    for (int32_t id : *ids) {
      out.add_token_ids(id);
      std::string piece;
      unicode::AppendValidUtf8(engine_->tokenizer().Piece(id), /*final=*/true, &piece);
      out.add_pieces(std::move(piece));
    }
    // Clients take replies of the size the server takes requests (gRPC's default 4 MiB).
    if (out.ByteSizeLong() > static_cast<size_t>(info_.limits().max_message_bytes())) {
      status = absl::ResourceExhaustedError(
          absl::StrFormat("the reply (%d tokens, %d bytes) would exceed %d bytes: tokenize less text at a time",
                          ids->size(), out.ByteSizeLong(), info_.limits().max_message_bytes()));
    }
  }
  if (!status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  ToBuffer(out, response);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GeneratorService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const v1::GetModelInfoRequest* request,
                                                         v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckNoUnknownFields(*request);
  if (status.ok()) *response = info_;
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace medusa::server
