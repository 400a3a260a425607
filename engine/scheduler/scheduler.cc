#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"
#include "engine/generate/sequence_decoder.h"
#include "kernels/base/status_macros.h"
#include "spdlog/spdlog.h"

namespace medusa {
namespace {

using Clock = SequenceDecoder::Clock;

struct Request {
  uint64_t id = 0;
  GenerationRequest request;  // moved into the decoder at admission
  RequestCallbacks callbacks;
  absl::Time deadline;
  int budget_blocks = 0;      // KV blocks its worst case needs, counted while it runs
  std::unique_ptr<SequenceDecoder> decoder;
  absl::Status end;           // not OK: ends with this status at the next removal
};

int BlocksFor(int slots, int block_size) { return (slots + block_size - 1) / block_size; }

// Keeps the requests of `list` that have not been ended, in order.
void DropEnded(std::vector<Request*>& list) {
  list.erase(std::remove_if(list.begin(), list.end(), [](const Request* r) { return !r->end.ok(); }), list.end());
}

void Deliver(Request& request, absl::StatusOr<GenerationResult> outcome) {
  if (request.callbacks.on_done) request.callbacks.on_done(std::move(outcome));
}

}  // namespace

struct Scheduler::Impl {
  Impl(Engine& engine, const SchedulerOptions& options);

  // Scheduler thread.
  void Loop();
  // Applies cancellations, Drain's cancel-all and deadlines of waiting requests.
  void TakeControl();
  // Moves the waiting requests that fit into `running` and prepares them.
  void Admit();
  void Start(Request& request);
  const MedusaTree* TreeFor(int batch) const;
  void Step();
  // Plans the decoding sequences' trees (roots first), computes their heads' logits
  // in one call and builds their candidates.
  void PlanDecoding();
  // Releases the KV blocks of finished and ended requests, then calls their on_done.
  void RemoveEnded();
  void EndEverything(const absl::Status& status);
  void Publish();
  bool IdleLocked() const { return waiting.empty() && running_count == 0 && !delivering; }

  Engine& engine;
  const SchedulerOptions options;
  const int block_size;
  const int total_blocks;
  bool heads_can_propose = false;  // the engine has heads and some tree with draft nodes
  int stats_depth = 0;             // the deepest tree the scheduler may use

  // Shared with callers, guarded by mu.
  mutable std::mutex mu;
  std::condition_variable wake;  // the scheduler thread: work or control arrived
  std::condition_variable idle;  // Drain: nothing running or waiting
  std::deque<std::unique_ptr<Request>> waiting;
  std::vector<uint64_t> cancels;
  absl::Status cancel_all;       // not OK: end everything with it (Drain past its grace)
  bool draining = false;
  bool stopping = false;
  uint64_t next_id = 1;
  int running_count = 0;
  int kv_used = 0;
  bool delivering = false;  // on_done calls in progress
  std::function<void(const StepReport&)> observer;
  bool observer_changed = false;

  // The scheduler thread's own.
  std::vector<std::unique_ptr<Request>> running;
  std::vector<std::unique_ptr<Request>> ending;  // left the waiting queue to end
  std::vector<std::unique_ptr<Request>> admitted;
  std::vector<std::unique_ptr<Request>> removed;
  std::vector<uint64_t> cancels_taken;
  std::function<void(const StepReport&)> step_observer;
  int committed_blocks = 0;  // sum of the running requests' budgets
  std::vector<Request*> decoding, prefilling;
  kernels::ForwardBatch batch;
  kernels::ForwardResult forward;
  std::vector<float> head_hidden, head_logits;
  const MedusaTree* step_tree = nullptr;
  StepReport report;
  std::thread thread;
};

Scheduler::Impl::Impl(Engine& engine, const SchedulerOptions& opts)
    : engine(engine),
      options([&] {
        SchedulerOptions o = opts;
        o.max_running = std::max(1, o.max_running);
        o.max_waiting = std::max(0, o.max_waiting);
        o.prefill_chunk = std::max(1, o.prefill_chunk);
        return o;
      }()),
      block_size(engine.kv_block_size()),
      total_blocks(engine.kv_allocator().num_blocks()) {
  const MedusaTree* tree = engine.medusa_tree();
  if (tree != nullptr) {
    heads_can_propose = tree->num_nodes() > 1;
    stats_depth = tree->max_depth();
    if (const AutoTree* automatic = engine.auto_tree()) {
      for (int b : automatic->batch_sizes()) {
        const MedusaTree& t = automatic->TreeForBatch(b);
        heads_can_propose |= t.num_nodes() > 1;
        stats_depth = std::max(stats_depth, t.max_depth());
      }
    }
  }
  running.reserve(options.max_running);
  kv_used = engine.kv_allocator().num_used();
}

void Scheduler::Impl::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      wake.wait(lock, [&] {
        return stopping || !cancels.empty() || !cancel_all.ok() || !waiting.empty() || !running.empty();
      });
      if (stopping) break;
      if (observer_changed) {
        step_observer = observer;
        observer_changed = false;
      }
      TakeControl();
    }
    RemoveEnded();  // cancelled and expired requests free their blocks before the step
    Admit();
    if (!running.empty()) Step();
    RemoveEnded();
    Publish();
  }
  EndEverything(absl::UnavailableError("the scheduler is shutting down"));
}

void Scheduler::Impl::TakeControl() {
  const absl::Time now = absl::Now();
  if (!cancel_all.ok()) {
    for (auto& r : running) r->end = cancel_all;
    for (auto& r : waiting) {
      r->end = cancel_all;
      ending.push_back(std::move(r));
    }
    waiting.clear();
    cancel_all = absl::OkStatus();
  }
  cancels_taken.swap(cancels);
  cancels.clear();
  for (uint64_t id : cancels_taken) {
    for (auto& r : running) {
      if (r->id == id && r->end.ok()) r->end = absl::CancelledError("the request was cancelled");
    }
    for (auto& r : waiting) {
      if (r && r->id == id) {
        r->end = absl::CancelledError("the request was cancelled");
        ending.push_back(std::move(r));
      }
    }
  }
  for (auto& r : waiting) {
    if (r && now >= r->deadline) {
      r->end = absl::DeadlineExceededError("the request's deadline passed while it waited");
      ending.push_back(std::move(r));
    }
  }
  waiting.erase(std::remove(waiting.begin(), waiting.end(), nullptr), waiting.end());
  for (auto& r : running) {
    if (r->end.ok() && now >= r->deadline) r->end = absl::DeadlineExceededError("the request's deadline passed");
  }
}

void Scheduler::Impl::Admit() {
  {
    std::lock_guard<std::mutex> lock(mu);
    while (!waiting.empty() && static_cast<int>(running.size() + admitted.size()) < options.max_running) {
      Request& next = *waiting.front();
      // Alone, a request runs whatever its worst case; with others, only when every
      // running request can still reach its end.
      const bool alone = running.empty() && admitted.empty();
      if (!alone && committed_blocks + next.budget_blocks > total_blocks) break;
      committed_blocks += next.budget_blocks;
      admitted.push_back(std::move(waiting.front()));
      waiting.pop_front();
    }
    running_count = static_cast<int>(running.size() + admitted.size());
  }
  for (auto& r : admitted) {
    Start(*r);
    running.push_back(std::move(r));
  }
  admitted.clear();
}

void Scheduler::Impl::Start(Request& r) {
  SequenceDecoder::Options decoder_options;
  decoder_options.medusa = r.request.use_medusa && heads_can_propose;
  decoder_options.stats_depth = decoder_options.medusa ? stats_depth : 0;
  decoder_options.on_text = std::move(r.callbacks.on_text);
  absl::StatusOr<std::unique_ptr<SequenceDecoder>> decoder =
      SequenceDecoder::Create(engine, std::move(r.request), std::move(decoder_options));
  if (!decoder.ok()) {
    r.end = decoder.status();
    return;
  }
  r.decoder = *std::move(decoder);
  if (absl::Status s = r.decoder->ReservePrompt(); !s.ok()) {
    r.end = absl::ResourceExhaustedError(absl::StrFormat(
        "no KV memory for the prompt of %d tokens: %s", r.decoder->request().prompt_ids.size(), s.message()));
  }
}

const MedusaTree* Scheduler::Impl::TreeFor(int batch_size) const {
  if (batch_size <= 0) return nullptr;
  if (const AutoTree* automatic = engine.auto_tree()) return &automatic->TreeForBatch(batch_size);
  if (batch_size == 1 || batch_size <= options.medusa_max_batch) return engine.medusa_tree();
  return nullptr;
}

void Scheduler::Impl::PlanDecoding() {
  // Every root's slot first: a tree takes only blocks no root needs.
  for (Request* r : decoding) {
    if (absl::Status s = r->decoder->ReserveRoot(); !s.ok()) {
      r->end = absl::ResourceExhaustedError(
          absl::StrFormat("KV memory ran out after %d generated tokens (%s)", r->decoder->generated(), s.message()));
    }
  }
  DropEnded(decoding);
  step_tree = TreeFor(static_cast<int>(decoding.size()));
  for (Request* r : decoding) {
    if (absl::Status s = r->decoder->PlanTree(step_tree); !s.ok()) r->end = s;
  }
  DropEnded(decoding);
  // The heads of every sequence verifying the step's tree, in one call.
  const absl::Span<const int32_t> draft = engine.backend().medusa_draft_vocab();
  const size_t vocab = draft.empty() ? engine.config().vocab_size : draft.size();
  head_hidden.clear();
  int rows = 0;
  for (Request* r : decoding) {
    if (!r->decoder->needs_head_logits()) continue;
    const absl::Span<const float> h = r->decoder->hidden();
    head_hidden.insert(head_hidden.end(), h.begin(), h.end());
    ++rows;
  }
  const int heads = rows > 0 ? step_tree->num_heads_used() : 0;
  if (rows > 0) {
    if (absl::Status s = engine.backend().MedusaHeadLogits(head_hidden, rows, heads, &head_logits); !s.ok()) {
      for (Request* r : decoding) {
        if (r->decoder->needs_head_logits()) r->end = s;
      }
      DropEnded(decoding);
    }
  }
  int row = 0;
  for (Request* r : decoding) {
    absl::Span<const float> logits;
    if (r->decoder->needs_head_logits()) {
      logits = absl::MakeConstSpan(head_logits).subspan(row++ * heads * vocab, heads * vocab);
    }
    if (absl::Status s = r->decoder->BuildCandidates(logits); !s.ok()) r->end = s;
  }
  DropEnded(decoding);
}

void Scheduler::Impl::Step() {
  const Clock::time_point start = Clock::now();
  decoding.clear();
  prefilling.clear();
  for (auto& r : running) {
    if (!r->end.ok() || r->decoder == nullptr) continue;
    (r->decoder->prefilling() ? prefilling : decoding).push_back(r.get());
  }
  PlanDecoding();

  batch.Clear();
  int seq = 0;
  bool want_hidden = false;
  report.medusa = false;
  report.tree_nodes = 1;
  for (Request* r : decoding) {
    r->decoder->AppendStep(batch, seq++);
    want_hidden |= r->decoder->medusa();
    if (r->decoder->planned_tree().num_nodes() > 1) {
      report.medusa = true;
      report.tree_nodes = r->decoder->planned_tree().num_nodes();
    }
  }
  report.prefill_tokens = 0;
  for (Request* r : prefilling) {
    r->decoder->AppendPrefill(batch, seq++, options.prefill_chunk);
    report.prefill_tokens += r->decoder->last_prefill_count();
    want_hidden |= r->decoder->medusa();
  }
  if (batch.tokens.empty()) return;
  batch.want_logits = !batch.output_rows.empty();
  batch.want_hidden = batch.want_logits && want_hidden;
  if (absl::Status s = engine.backend().Forward(batch, &forward); !s.ok()) {
    spdlog::error("scheduler: forward pass failed: {}", s.ToString());
    for (Request* r : decoding) r->end = s;
    for (Request* r : prefilling) r->end = s;
    return;
  }

  report.batch_size = static_cast<int>(decoding.size());
  report.tokens = 0;
  report.first_tokens = 0;
  report.accepted.clear();
  for (Request* r : decoding) {
    if (absl::Status s = r->decoder->AfterForward(forward, start); !s.ok()) r->end = s;
    report.tokens += r->decoder->last_emitted();
    report.accepted.push_back(r->decoder->last_accepted());
  }
  for (Request* r : prefilling) {
    if (absl::Status s = r->decoder->AfterForward(forward, start); !s.ok()) r->end = s;
    report.tokens += r->decoder->last_emitted();
    report.first_tokens += r->decoder->last_emitted() > 0 ? 1 : 0;
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (step_observer) step_observer(report);
}

void Scheduler::Impl::RemoveEnded() {
  removed.clear();
  for (auto& r : running) {
    if (!r->end.ok() || (r->decoder != nullptr && r->decoder->done())) {
      if (r->decoder != nullptr) r->decoder->Release();
      committed_blocks -= r->budget_blocks;
      removed.push_back(std::move(r));
    }
  }
  if (!removed.empty()) {
    running.erase(std::remove(running.begin(), running.end(), nullptr), running.end());
  }
  if (removed.empty() && ending.empty()) return;
  // Blocks are back in the pool, and load() says so, before anyone hears of the end;
  // Drain waits until every on_done has returned.
  {
    std::lock_guard<std::mutex> lock(mu);
    running_count = static_cast<int>(running.size());
    kv_used = engine.kv_allocator().num_used();
    delivering = true;
  }
  for (auto& r : removed) {
    if (r->end.ok()) {
      Deliver(*r, r->decoder->TakeResult());
    } else {
      Deliver(*r, r->end);
    }
  }
  for (auto& r : ending) Deliver(*r, r->end);
  ending.clear();
  removed.clear();
  std::lock_guard<std::mutex> lock(mu);
  delivering = false;
  if (IdleLocked()) idle.notify_all();
}

void Scheduler::Impl::EndEverything(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& r : waiting) {
      r->end = status;
      ending.push_back(std::move(r));
    }
    waiting.clear();
  }
  for (auto& r : running) r->end = status;
  RemoveEnded();
  Publish();
}

void Scheduler::Impl::Publish() {
  std::lock_guard<std::mutex> lock(mu);
  running_count = static_cast<int>(running.size());
  kv_used = engine.kv_allocator().num_used();
  if (IdleLocked()) idle.notify_all();
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
  RETURN_IF_ERROR(ValidateRequest(s.engine, request));
  const int prompt = static_cast<int>(request.prompt_ids.size());
  if (BlocksFor(prompt + 1, s.block_size) > s.total_blocks) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the prompt of %d tokens and its first generated token need %d KV blocks; the whole pool has %d", prompt,
        BlocksFor(prompt + 1, s.block_size), s.total_blocks));
  }
  auto r = std::make_unique<Request>();
  const int worst_slots = prompt + std::min(request.max_tokens, s.engine.config().max_seq_len - prompt);
  r->budget_blocks = BlocksFor(worst_slots, s.block_size);
  r->request = std::move(request);
  r->callbacks = std::move(callbacks);
  r->deadline = deadline;
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.stopping || s.draining) {
    return absl::UnavailableError("the server is shutting down and accepts no new requests");
  }
  const int queued = s.running_count + static_cast<int>(s.waiting.size());
  if (queued >= s.options.max_running + s.options.max_waiting) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the queue is full: %d requests running or waiting (max_running %d + max_waiting %d)", queued,
        s.options.max_running, s.options.max_waiting));
  }
  r->id = s.next_id++;
  const uint64_t id = r->id;
  s.waiting.push_back(std::move(r));
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
    const auto until = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(std::max(grace, absl::ZeroDuration()));
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
          .waiting = static_cast<int>(impl_->waiting.size()),
          .kv_blocks_used = impl_->kv_used,
          .kv_blocks_total = impl_->total_blocks};
}

void Scheduler::set_step_observer(std::function<void(const StepReport&)> observer) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->observer = std::move(observer);
  impl_->observer_changed = true;
}

}  // namespace medusa
