#include "engine/scheduler/engine_core.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

int BlocksFor(int slots, int block_size) { return (slots + block_size - 1) / block_size; }

}  // namespace

EngineCore::EngineCore(Engine& engine, const StepOptions& options)
    : engine_(engine),
      runner_(engine, options),
      max_running_(std::max(1, options.max_batch)),
      block_size_(engine.kv_block_size()),
      total_blocks_(engine.kv_allocator().num_blocks()) {
  running_.reserve(max_running_);
}

absl::Status EngineCore::Check(const GenerationRequest& request) const {
  RETURN_IF_ERROR(ValidateRequest(engine_.config(), request));
  const int prompt = static_cast<int>(request.prompt_ids.size());
  if (BlocksFor(prompt + 1, block_size_) > total_blocks_) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the prompt of %d tokens and its first generated token need %d KV blocks; the whole pool has %d",
                        prompt, BlocksFor(prompt + 1, block_size_), total_blocks_));
  }
  return absl::OkStatus();
}

int EngineCore::BudgetBlocks(const GenerationRequest& request) const {
  const int prompt = static_cast<int>(request.prompt_ids.size());
  return BlocksFor(prompt + std::min(request.max_tokens, engine_.config().max_seq_len - prompt), block_size_);
}

absl::Status EngineCore::Add(uint64_t id, GenerationRequest request, RequestOptions options) {
  RETURN_IF_ERROR(Check(request));
  auto r = std::make_unique<Request>();
  r->id = id;
  r->deadline = options.deadline;
  r->budget_blocks = BudgetBlocks(request);
  SequenceDecoder::Options decoder_options;
  decoder_options.use_medusa = request.use_medusa && runner_.medusa_possible();
  decoder_options.stats_depth = decoder_options.use_medusa ? runner_.max_tree_depth() : 0;
  decoder_options.on_text = std::move(options.on_text);
  decoder_options.hooks = options.hooks;
  ASSIGN_OR_RETURN(r->decoder, SequenceDecoder::Create(engine_, std::move(request), std::move(decoder_options)));
  waiting_.push_back(std::move(r));
  return absl::OkStatus();
}

void EngineCore::Abort(uint64_t id, const absl::Status& status) {
  for (auto& r : waiting_) {
    if (r->id == id) r->decoder->Fail(status);
  }
  for (auto& r : running_) {
    if (r->id == id) r->decoder->Fail(status);
  }
}

void EngineCore::AbortAll(const absl::Status& status) {
  for (auto& r : waiting_) r->decoder->Fail(status);
  for (auto& r : running_) r->decoder->Fail(status);
}

void EngineCore::EndExpired() {
  const absl::Time now = absl::Now();
  for (auto& r : waiting_) {
    if (now >= r->deadline) {
      r->decoder->Fail(absl::DeadlineExceededError("the request's deadline passed while it waited"));
    }
  }
  for (auto& r : running_) {
    if (now >= r->deadline) r->decoder->Fail(absl::DeadlineExceededError("the request's deadline passed"));
  }
}

void EngineCore::TakeEnded(std::vector<RequestOutput>& outputs) {
  auto end = [&](std::unique_ptr<Request>& r) {
    r->decoder->Release();
    outputs.push_back({r->id, r->decoder->TakeResult()});
    r.reset();
  };
  for (auto& r : running_) {
    if (!r->decoder->ended()) continue;
    committed_blocks_ -= r->budget_blocks;
    end(r);
  }
  running_.erase(std::remove(running_.begin(), running_.end(), nullptr), running_.end());
  for (auto& r : waiting_) {
    if (r->decoder->ended()) end(r);
  }
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), nullptr), waiting_.end());
}

void EngineCore::Admit() {
  while (!waiting_.empty() && static_cast<int>(running_.size()) < max_running_) {
    Request& next = *waiting_.front();
    // Alone, a request runs whatever its worst case; with others, only when every
    // running request can still reach its end.
    if (!running_.empty() && committed_blocks_ + next.budget_blocks > total_blocks_) break;
    committed_blocks_ += next.budget_blocks;
    if (absl::Status s = next.decoder->ReservePrompt(); !s.ok()) {
      next.decoder->Fail(absl::ResourceExhaustedError(absl::StrFormat(
          "no KV memory for the prompt of %d tokens: %s", next.decoder->request().prompt_ids.size(), s.message())));
    }
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

std::vector<RequestOutput> EngineCore::Step() {
  std::vector<RequestOutput> outputs;
  EndExpired();
  TakeEnded(outputs);  // aborted and expired requests free their blocks before the step
  Admit();
  step_sequences_.clear();
  for (const auto& r : running_) step_sequences_.push_back(r->decoder.get());
  if (const StepReport* report = runner_.Run(step_sequences_); report != nullptr && observer_) observer_(*report);
  TakeEnded(outputs);
  return outputs;
}

}  // namespace medusa
