#pragma once
// The engine's decoding loop: requests in, one Step() at a time, results out. Requests
// wait in a FIFO queue and are admitted by KV capacity; each Step() runs one forward pass
// over every running sequence (StepRunner). Generate() is this loop with one request,
// self-distillation is a client of it with many, and the server's Scheduler runs it on its
// own thread (as vLLM's offline LLM and its server both drive EngineCore.step()).
//
// Single-threaded: one thread calls everything but Check(). It owns the engine's backend
// and KV pool while it runs requests.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/generate/request.h"
#include "engine/generate/sequence_decoder.h"
#include "engine/scheduler/step_runner.h"

namespace medusa {

// A request's own settings besides the request itself.
struct RequestOptions {
  // New tokens and their text, as soon as a step makes them final (text may be empty
  // while a UTF-8 sequence or a possible stop string is incomplete).
  StreamCallback on_text;
  absl::Time deadline = absl::InfiniteFuture();
  const GenerateHooks* hooks = nullptr;  // must outlive the request; nullptr: none
};

// A request that ended, with its result: finish_reason "stop" or "length", or Cancelled /
// Unavailable (Abort), DeadlineExceeded, ResourceExhausted (KV memory ran out
// mid-generation), Internal. Its KV blocks are free by then.
struct RequestOutput {
  uint64_t id = 0;
  absl::StatusOr<GenerationResult> result;
};

class EngineCore {
 public:
  // `options.max_batch` is the most requests running at once.
  EngineCore(Engine& engine, const StepOptions& options);

  // Whether the request can run here: InvalidArgument naming the field (ValidateRequest),
  // ResourceExhausted when its prompt and first token exceed the whole KV pool. Reads only
  // the engine's fixed settings, so any thread may call it.
  absl::Status Check(const GenerationRequest& request) const;

  // Checks the request (Check) and queues it under the caller's id (unique among the
  // requests here). Admission (FIFO) reserves the prompt's KV blocks and counts the request's worst
  // case, prompt + max_tokens (capped by the context), against the pool: requests run
  // together only when all of them can reach their end, so a running sequence never runs
  // out of KV memory. One whose worst case exceeds the pool runs when nothing else does and,
  // if its generation outgrows the pool, ends with ResourceExhausted (no preemption). Trees
  // use only blocks that are free in a step; without them a sequence takes a plain step.
  absl::Status Add(uint64_t id, GenerationRequest request, RequestOptions options);

  // Ends a waiting or running request with `status` at the next Step; unknown ids (ended
  // already) are ignored.
  void Abort(uint64_t id, const absl::Status& status);
  void AbortAll(const absl::Status& status);

  // Ends the requests aborted or past their deadline, admits waiting ones, runs one step
  // (calling the step observer when a forward pass ran), and returns every request that
  // ended, in the order they ended.
  std::vector<RequestOutput> Step();

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  // KV blocks of the whole pool.
  int total_blocks() const { return total_blocks_; }
  // Called after every forward pass, before the requests it ended are returned.
  void set_step_observer(std::function<void(const StepReport&)> observer) { observer_ = std::move(observer); }

 private:
  struct Request {
    uint64_t id = 0;
    absl::Time deadline;
    int budget_blocks = 0;  // KV blocks its worst case needs, counted while it runs
    std::unique_ptr<SequenceDecoder> decoder;
  };

  void EndExpired();
  void Admit();
  // Moves the ended requests (finished or failed) to `outputs`, releasing their blocks.
  void TakeEnded(std::vector<RequestOutput>& outputs);
  int BudgetBlocks(const GenerationRequest& request) const;

  Engine& engine_;
  StepRunner runner_;
  const int max_running_;
  const int block_size_;
  const int total_blocks_;
  std::deque<std::unique_ptr<Request>> waiting_;
  std::vector<std::unique_ptr<Request>> running_;
  int committed_blocks_ = 0;  // sum of the running requests' budgets
  std::vector<SequenceDecoder*> step_sequences_;
  std::function<void(const StepReport&)> observer_;
};

}  // namespace medusa
