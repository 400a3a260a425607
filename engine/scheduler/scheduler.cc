#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "engine/scheduler/engine_core.h"

namespace medusa {

struct Scheduler::Impl {
  Impl(Engine& engine, const SchedulerOptions& options);

  // The scheduler's thread: hands over what callers sent, steps, delivers the ends.
  void Loop();
  // Gives the core the submitted requests, cancellations and Drain's cancel-all; requests
  // the core refuses end in `outputs`.
  void TakeControlLocked(std::vector<RequestOutput>& outputs);
  // Publishes the counts (blocks already back in the pool), then calls on_done for
  // `outputs`; Drain waits until every on_done has returned.
  void Deliver(std::vector<RequestOutput>& outputs);
  void PublishLocked();
  bool IdleLocked() const { return inbox.empty() && running_count == 0 && waiting_count == 0 && !delivering; }

  struct Submitted {
    uint64_t id;
    GenerationRequest request;
    RequestCallbacks callbacks;
    absl::Time deadline;
  };

  Engine& engine;
  const SchedulerOptions options;
  EngineCore core;  // the scheduler thread's alone (Check aside)

  // Shared with callers, guarded by mu.
  mutable std::mutex mu;
  std::condition_variable wake;  // the scheduler thread: work or control arrived
  std::condition_variable idle;  // Drain: nothing running or waiting
  std::vector<Submitted> inbox;  // submitted, not yet given to the core
  std::vector<uint64_t> cancels;
  absl::Status cancel_all;       // not OK: end everything with it (Drain past its grace)
  bool draining = false;
  bool stopping = false;
  uint64_t next_id = 1;
  int running_count = 0;  // the core's, as of the last hand-over or step
  int waiting_count = 0;
  int kv_used = 0;
  bool delivering = false;  // on_done calls in progress

  // The scheduler thread's own.
  absl::flat_hash_map<uint64_t, std::function<void(absl::StatusOr<GenerationResult>)>> on_done;
  std::vector<Submitted> taken;
  std::vector<uint64_t> cancels_taken;
  std::thread thread;
};

namespace {

StepOptions StepOptionsOf(const SchedulerOptions& options) {
  StepOptions step;
  step.prefill_chunk = options.prefill_chunk;
  step.medusa_max_batch = options.medusa_max_batch;
  step.plain_probe_every = options.plain_probe_every;
  step.max_batch = options.max_running;
  return step;
}

}  // namespace

Scheduler::Impl::Impl(Engine& engine, const SchedulerOptions& opts)
    : engine(engine),
      options([&] {
        SchedulerOptions o = opts;
        o.max_running = std::max(1, o.max_running);
        o.max_waiting = std::max(0, o.max_waiting);
        return o;
      }()),
      core(engine, StepOptionsOf(options)) {
  core.set_step_observer(options.step_observer);
  kv_used = engine.kv_allocator().num_used();
}

void Scheduler::Impl::TakeControlLocked(std::vector<RequestOutput>& outputs) {
  taken.swap(inbox);
  inbox.clear();
  for (Submitted& s : taken) {
    RequestOptions request_options;
    request_options.on_text = std::move(s.callbacks.on_text);
    request_options.deadline = s.deadline;
    const absl::Status added = core.Add(s.id, std::move(s.request), std::move(request_options));
    if (added.ok()) {
      on_done[s.id] = std::move(s.callbacks.on_done);
    } else if (s.callbacks.on_done) {
      on_done[s.id] = std::move(s.callbacks.on_done);
      outputs.push_back({s.id, added});
    }
  }
  taken.clear();
  cancels_taken.swap(cancels);
  cancels.clear();
  for (uint64_t id : cancels_taken) core.Abort(id, absl::CancelledError("the request was cancelled"));
  if (!cancel_all.ok()) {
    core.AbortAll(cancel_all);
    cancel_all = absl::OkStatus();
  }
  PublishLocked();
}

void Scheduler::Impl::PublishLocked() {
  running_count = core.num_running();
  waiting_count = core.num_waiting();
  kv_used = engine.kv_allocator().num_used();
}

void Scheduler::Impl::Deliver(std::vector<RequestOutput>& outputs) {
  {
    std::lock_guard<std::mutex> lock(mu);
    PublishLocked();
    delivering = !outputs.empty();
    if (!delivering) {
      if (IdleLocked()) idle.notify_all();
      return;
    }
  }
  for (RequestOutput& out : outputs) {
    auto it = on_done.find(out.id);
    if (it == on_done.end()) continue;
    if (it->second) it->second(std::move(out.result));
    on_done.erase(it);
  }
  outputs.clear();
  std::lock_guard<std::mutex> lock(mu);
  delivering = false;
  if (IdleLocked()) idle.notify_all();
}

void Scheduler::Impl::Loop() {
  std::vector<RequestOutput> outputs;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      wake.wait(lock, [&] {
        return stopping || !inbox.empty() || !cancels.empty() || !cancel_all.ok() || core.has_unfinished();
      });
      if (stopping) break;
      TakeControlLocked(outputs);
    }
    std::vector<RequestOutput> ended = core.Step();
    outputs.insert(outputs.end(), std::make_move_iterator(ended.begin()), std::make_move_iterator(ended.end()));
    Deliver(outputs);
  }
  // Shutting down: everything still here ends Unavailable.
  {
    std::lock_guard<std::mutex> lock(mu);
    cancel_all = absl::UnavailableError("the scheduler is shutting down");
    TakeControlLocked(outputs);
  }
  std::vector<RequestOutput> ended = core.Step();
  outputs.insert(outputs.end(), std::make_move_iterator(ended.begin()), std::make_move_iterator(ended.end()));
  Deliver(outputs);
}

Scheduler::Scheduler(Engine& engine, const SchedulerOptions& options)
    : impl_(std::make_unique<Impl>(engine, options)) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->Loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify_one();
  impl_->thread.join();
}

absl::StatusOr<uint64_t> Scheduler::Submit(GenerationRequest request, RequestCallbacks callbacks,
                                           absl::Time deadline) {
  Impl& s = *impl_;
  if (absl::Status status = s.core.Check(request); !status.ok()) return status;
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.stopping || s.draining) {
    return absl::UnavailableError("the server is shutting down and accepts no new requests");
  }
  const int queued = s.running_count + s.waiting_count + static_cast<int>(s.inbox.size());
  if (queued >= s.options.max_running + s.options.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the queue is full: %d requests running or waiting (max_running %d + max_waiting %d)", queued,
                        s.options.max_running, s.options.max_waiting));
  }
  const uint64_t id = s.next_id++;
  s.inbox.push_back({id, std::move(request), std::move(callbacks), deadline});
  s.wake.notify_one();
  return id;
}

void Scheduler::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (id == 0 || id >= impl_->next_id) return;
    impl_->cancels.push_back(id);
  }
  impl_->wake.notify_one();
}

bool Scheduler::Drain(absl::Duration grace) {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mu);
  s.draining = true;
  bool finished;
  // Beyond a day, wait without a deadline (and without overflowing the clock).
  if (grace > absl::Hours(24)) {
    s.idle.wait(lock, [&] { return s.IdleLocked(); });
    finished = true;
  } else {
    const auto until =
        std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(std::max(grace, absl::ZeroDuration()));
    finished = s.idle.wait_until(lock, until, [&] { return s.IdleLocked(); });
  }
  if (finished) return true;
  s.cancel_all = absl::UnavailableError("the server is shutting down: the grace period ended");
  s.wake.notify_one();
  s.idle.wait(lock, [&] { return s.IdleLocked(); });
  return false;
}

SchedulerLoad Scheduler::load() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return {.running = impl_->running_count,
          .waiting = impl_->waiting_count + static_cast<int>(impl_->inbox.size()),
          .kv_blocks_used = impl_->kv_used,
          .kv_blocks_total = impl_->core.total_blocks()};
}

}  // namespace medusa
