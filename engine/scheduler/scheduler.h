#pragma once
// Continuous batching over one Engine: requests join between steps, every step is
// one batched forward pass over each running sequence's Medusa tree (tree attention
// kept within each sequence) plus prefill chunks of newcomers, and sequences leave
// the moment they finish. Admission is by KV capacity with a bounded waiting queue.
// Load-adaptive Medusa: the tree for a step comes from the engine's auto tree for
// the current batch size (plain decoding where verifying would cost more than it
// gains). Knows nothing of gRPC: the server maps its callbacks onto streams.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/generate/generator.h"

namespace medusa {

struct SchedulerOptions {
  int max_running = 16;     // sequences decoded together
  int max_waiting = 64;     // admitted but not yet running; beyond: ResourceExhausted at once
  int prefill_chunk = 256;  // prompt tokens per step per newcomer
  // Without an auto tree (`--tree auto`), the engine's fixed tree is verified while at
  // most this many sequences decode, plain decoding above. Each tree node costs about
  // as much compute as a token of a plain step, and a plain step is memory-bound: at
  // batch b a tree of n nodes adds about b * n tokens of compute for the same weight
  // traffic, which stops paying somewhere past a few sequences (the auto tree measures
  // it instead). A sequence decoding alone always uses the tree, as Generate does.
  int medusa_max_batch = 4;
};

// What one decoding step did, for metrics. A step may also carry prompt chunks of
// newcomers (prefill_tokens > 0), which lengthen it: step-time metrics per mode are
// cleanest from steps without them. batch_size is 0 for a step of prompt chunks only.
struct StepReport {
  int batch_size = 0;        // sequences decoded in this step (prefilling ones excluded)
  bool medusa = false;       // whether any sequence verified a tree
  int tree_nodes = 1;        // nodes per sequence (1 for plain)
  double seconds = 0;        // wall time of the step (heads, forward, acceptance)
  int tokens = 0;            // tokens emitted by all sequences
  std::vector<int> accepted; // per sequence: draft tokens kept
  int prefill_tokens = 0;    // prompt tokens of newcomers processed in the same forward
  int first_tokens = 0;      // newcomers whose prompt ended here (their first token is in `tokens`)
};

// Live counts, for metrics and health.
struct SchedulerLoad {
  int running = 0;
  int waiting = 0;
  int kv_blocks_used = 0;
  int kv_blocks_total = 0;
};

// Callbacks of one request; all run on the scheduler's thread and must not block.
struct RequestCallbacks {
  // New tokens and their text, as soon as a step makes them final (text may be empty
  // while a UTF-8 sequence or a possible stop string is incomplete).
  StreamCallback on_text;
  // Once, at the end: the result (finish_reason "stop" or "length"), or Cancelled,
  // DeadlineExceeded, ResourceExhausted (KV memory ran out mid-generation), Unavailable
  // (shutdown) or Internal. The request's KV blocks are free before this is called.
  std::function<void(absl::StatusOr<GenerationResult>)> on_done;
};

// The scheduler's thread is the only user of the engine's backend and KV pool while
// it lives: nothing else (Generate, another scheduler) may run on the same Engine.
class Scheduler {
 public:
  // Starts the scheduler's thread.
  Scheduler(Engine& engine, const SchedulerOptions& options);
  // Stops the thread; requests still present end with Unavailable.
  ~Scheduler();

  // Validates (InvalidArgument naming the field, as ValidateRequest) and queues a
  // request; ResourceExhausted at once when the queue is full (max_running +
  // max_waiting requests already running or waiting) or when the
  // prompt (plus the first generated token) exceeds the whole KV pool, Unavailable
  // after Drain began. Returns the request's id for Cancel.
  //
  // Admission (FIFO) reserves the prompt's KV blocks and counts the request's worst
  // case, prompt + max_tokens (capped by the context), against the pool: requests run
  // together only when all of them can reach their end, so a running sequence never
  // runs out of KV memory. One whose worst case exceeds the pool runs when nothing else
  // does and, if its generation outgrows the pool, ends with ResourceExhausted (no
  // preemption). Trees use only blocks that are free in a step; without them a
  // sequence takes a plain step.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, RequestCallbacks callbacks,
                                  absl::Time deadline = absl::InfiniteFuture());
  // Ends a request (Cancelled) and frees its blocks before the next step; unknown
  // ids (already finished) are ignored.
  void Cancel(uint64_t id);
  // Refuses new requests (Unavailable) and waits up to `grace` for the running and
  // waiting ones to finish; then cancels what is left (Unavailable). Returns true when
  // everything finished within the grace period.
  bool Drain(absl::Duration grace);

  SchedulerLoad load() const;
  // Called after every step on the scheduler's thread (metrics); set before Submit.
  void set_step_observer(std::function<void(const StepReport&)> observer);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace medusa
