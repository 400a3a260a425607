#pragma once
// Continuous batching for the server: EngineCore on a thread of its own. Requests join
// between steps, each step is one batched forward pass over every running sequence's
// Medusa tree (tree attention kept within each sequence) plus prefill chunks of newcomers,
// and sequences leave the moment they finish. Admission is by KV capacity with a bounded
// waiting queue. Load-adaptive Medusa: the tree for a step comes from the engine's auto tree
// for the current batch size (plain decoding where verifying would cost more than it
// gains). Knows nothing of gRPC: the server maps its callbacks onto streams.

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/generate/request.h"
#include "engine/scheduler/step_runner.h"

namespace medusa {

struct SchedulerOptions {
  int max_running = 16;     // sequences decoded together
  int max_waiting = 64;     // admitted but not yet running; beyond: ResourceExhausted at once
  int prefill_chunk = 256;  // prompt tokens per step per newcomer
  int medusa_max_batch = 4; // without an auto tree: StepOptions::medusa_max_batch
  int plain_probe_every = 0;  // StepOptions::plain_probe_every
  // Called after every step on the scheduler's thread (metrics), before the requests the
  // step ended hear of it.
  std::function<void(const StepReport&)> step_observer;
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
  StreamCallback on_text;  // RequestOptions::on_text
  // Once, at the end: RequestOutput::result. The request's KV blocks are free, and load()
  // says so, before this is called.
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

  // Checks (EngineCore::Check) and queues a request; ResourceExhausted at once when the
  // queue is full (max_running + max_waiting requests already running or waiting),
  // Unavailable after Drain began. Returns the request's id for Cancel. Admission is
  // EngineCore's.
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace medusa
