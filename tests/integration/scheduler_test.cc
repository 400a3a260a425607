// The continuous-batching scheduler on real models (stories260K, random Medusa heads).
// The central invariant: every greedy request produces exactly what Generate() gives
// for it alone, whatever else runs beside it, with Medusa on or off. Also: streaming
// order, cancellation, deadlines, the bounded queue, validation, Drain, shutdown, a
// small KV pool under load (no leak, no crash) and the load-adaptive tree.

#include "engine/scheduler/scheduler.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/medusa/heads_file.h"
#include "engine/medusa/tree.h"
#include "engine/medusa/tree_builder.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "gtest/gtest.h"
#include "tests/support/random_heads.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::kSmolModel;
using testing::kStoriesModel;
using testing::kStoriesTokenizer;

std::unique_ptr<Engine> MakeEngine(const std::string& model, int64_t kv_bytes = 16ll << 20,
                                   const std::string& heads = "", const std::string& tree = "mc_sim_7b_63") {
  EngineOptions options;
  options.model_path = model;
  if (model == kStoriesModel) options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = kv_bytes;
  options.heads_path = heads;
  options.tree = tree;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

void InstallRandomHeads(Engine& engine, const std::string& tree_name = "mc_sim_7b_63") {
  absl::StatusOr<MedusaTree> tree = LoadTree(tree_name, 5);
  ASSERT_TRUE(tree.ok()) << tree.status();
  ASSERT_TRUE(engine.SetMedusa(RandomMedusaHeads(engine.config(), 5, 1, false, /*seed=*/7, 0.05f), *tree).ok());
}

GenerationRequest Request(const Engine& engine, const std::string& prompt, int max_tokens,
                          std::vector<std::string> stops = {}) {
  GenerationRequest r;
  auto ids = EncodePrompt(engine.tokenizer(), prompt, false);
  EXPECT_TRUE(ids.ok()) << ids.status();
  r.prompt_ids = ids.ok() ? *ids : std::vector<int32_t>{};
  r.max_tokens = max_tokens;
  r.stop_strings = std::move(stops);
  return r;
}

GenerationResult Alone(Engine& engine, const GenerationRequest& request) {
  auto result = Generate(engine, request);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *std::move(result) : GenerationResult{};
}

// One request's view of the scheduler: what was streamed, and how it ended.
class Collector {
 public:
  // `delay` slows each on_text call (it runs on the scheduler's thread), so a test can
  // act in the middle of a stream of a model as fast as stories260K.
  explicit Collector(std::chrono::milliseconds delay = std::chrono::milliseconds(0), Engine* engine = nullptr)
      : delay_(delay), engine_(engine) {}

  RequestCallbacks Callbacks() {
    RequestCallbacks callbacks;
    callbacks.on_text = [this](absl::Span<const int32_t> ids, std::string_view text) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (done_calls_ > 0) text_after_done_ = true;
        ids_.insert(ids_.end(), ids.begin(), ids.end());
        text_.append(text);
      }
      cv_.notify_all();
      if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    };
    callbacks.on_done = [this](absl::StatusOr<GenerationResult> outcome) {
      std::lock_guard<std::mutex> lock(mu_);
      ++done_calls_;
      // Runs on the scheduler's thread: the allocator may be read here.
      if (engine_ != nullptr) kv_used_at_done_ = engine_->kv_allocator().num_used();
      outcome_ = std::move(outcome);
      cv_.notify_all();
    };
    return callbacks;
  }

  // Waits for on_done (up to 60 s); false on timeout.
  // Hang detectors: SmolLM2 runs about ten times slower under ThreadSanitizer.
  bool WaitDone() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::minutes(10), [&] { return done_calls_ > 0; });
  }
  bool WaitForTokens(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::minutes(10), [&] { return ids_.size() >= n || done_calls_ > 0; });
  }

  absl::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return outcome_ ? outcome_->status() : absl::UnknownError("not done");
  }
  GenerationResult result() const {
    std::lock_guard<std::mutex> lock(mu_);
    return outcome_ && outcome_->ok() ? **outcome_ : GenerationResult{};
  }
  std::vector<int32_t> ids() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ids_;
  }
  std::string text() const {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }
  int done_calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_calls_;
  }
  bool text_after_done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return text_after_done_;
  }
  int kv_used_at_done() const { return kv_used_at_done_; }

 private:
  const std::chrono::milliseconds delay_;
  Engine* engine_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int32_t> ids_;
  std::string text_;
  int done_calls_ = 0;
  bool text_after_done_ = false;
  int kv_used_at_done_ = -1;
  std::optional<absl::StatusOr<GenerationResult>> outcome_;
};

uint64_t MustSubmit(Scheduler& scheduler, GenerationRequest request, Collector& collector,
                    absl::Time deadline = absl::InfiniteFuture()) {
  absl::StatusOr<uint64_t> id = scheduler.Submit(std::move(request), collector.Callbacks(), deadline);
  EXPECT_TRUE(id.ok()) << id.status();
  return id.ok() ? *id : 0;
}

// Records every StepReport.
struct StepLog {
  std::mutex mu;
  std::vector<StepReport> steps;
  std::function<void(const StepReport&)> Observer() {
    return [this](const StepReport& report) {
      std::lock_guard<std::mutex> lock(mu);
      steps.push_back(report);
    };
  }
  std::vector<StepReport> Take() {
    std::lock_guard<std::mutex> lock(mu);
    return steps;
  }
};

// Sixteen prompts of different lengths, limits and stop strings.
std::vector<GenerationRequest> SixteenRequests(const Engine& engine) {
  const std::vector<std::string> starts = {
      "Once upon a time", "Lily and Tom went to the park", "The little dog", "One day, a girl named Sue",
      "There was a big red ball", "Tim liked to play", "The sun was hot and", "A cat sat on the mat",
      "Mom said", "The bird flew", "Ben had a toy car that", "In the garden there was",
      "Sam was sad because", "The old tree", "Anna found a box", "It was a rainy day and"};
  std::vector<GenerationRequest> requests;
  for (size_t i = 0; i < starts.size(); ++i) {
    const int max_tokens = 20 + static_cast<int>(i * 37 % 140);
    std::vector<std::string> stops;
    if (i % 4 == 1) stops = {"."};
    if (i % 4 == 3) stops = {" the ", "!"};
    requests.push_back(Request(engine, starts[i], max_tokens, stops));
  }
  return requests;
}

void ExpectSameAsAlone(const Collector& c, const GenerationResult& alone, const std::string& what) {
  ASSERT_TRUE(c.status().ok()) << what << ": " << c.status();
  const GenerationResult got = c.result();
  EXPECT_EQ(got.token_ids, alone.token_ids) << what;
  EXPECT_EQ(got.text, alone.text) << what;
  EXPECT_EQ(got.finish_reason, alone.finish_reason) << what;
  // Streaming: ids in order, their concatenation is the result; the text likewise.
  EXPECT_EQ(c.ids(), got.token_ids) << what;
  EXPECT_EQ(c.text(), got.text) << what;
  EXPECT_EQ(c.done_calls(), 1) << what;
  EXPECT_FALSE(c.text_after_done()) << what;
}

// 1 + 2. Sixteen concurrent greedy requests, some with stop strings: each is exactly
// what Generate gives alone, with Medusa on (trees verified for many sequences in one
// pass) and off; streamed ids and text add up to the result; on_done once.
TEST(SchedulerTest, SixteenConcurrentGreedyRequestsMatchGenerateAlone) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = MakeEngine(kStoriesModel);
  ASSERT_NE(engine, nullptr);
  InstallRandomHeads(*engine);
  const std::vector<GenerationRequest> requests = SixteenRequests(*engine);
  std::vector<GenerationResult> alone;
  int stopped_by_string = 0;
  for (const GenerationRequest& r : requests) {
    alone.push_back(Alone(*engine, r));
    GenerationRequest plain = r;
    plain.use_medusa = false;
    ASSERT_EQ(Alone(*engine, plain).token_ids, alone.back().token_ids) << "Generate: Medusa changed the output";
    if (!r.stop_strings.empty() && alone.back().finish_reason == FinishReason::kStop) ++stopped_by_string;
  }
  EXPECT_GE(stopped_by_string, 2) << "the stop strings should end some requests";

  for (const bool use_medusa : {true, false}) {
    SCOPED_TRACE(use_medusa ? "Medusa on" : "Medusa off");
    StepLog log;
    {
      SchedulerOptions options;
      options.medusa_max_batch = 16;  // trees at every batch size: many sequences' trees per pass
      options.prefill_chunk = 4;      // prompts span several steps, beside others' decoding
      options.step_observer = log.Observer();
      std::vector<std::unique_ptr<Collector>> collectors;  // outlive the scheduler (see below)
      Scheduler scheduler(*engine, options);
      for (GenerationRequest r : requests) {
        r.use_medusa = use_medusa;
        collectors.push_back(std::make_unique<Collector>());
        MustSubmit(scheduler, std::move(r), *collectors.back());
      }
      for (size_t i = 0; i < requests.size(); ++i) {
        ASSERT_TRUE(collectors[i]->WaitDone()) << "request " << i;
        ExpectSameAsAlone(*collectors[i], alone[i], "request " + std::to_string(i));
      }
      EXPECT_EQ(scheduler.load().running, 0);
      EXPECT_EQ(scheduler.load().kv_blocks_used, 0);
    }
    EXPECT_EQ(engine->kv_allocator().num_used(), 0);
    int max_batch = 0, medusa_batched = 0, mixed = 0;
    for (const StepReport& s : log.Take()) {
      max_batch = std::max(max_batch, s.batch_size);
      if (s.medusa && s.batch_size > 1) ++medusa_batched;
      if (s.prefill_tokens > 0 && s.batch_size > 0) ++mixed;
      EXPECT_EQ(static_cast<int>(s.accepted.size()), s.batch_size);
      if (!use_medusa) {
        EXPECT_FALSE(s.medusa);
      }
    }
    EXPECT_GE(max_batch, 8) << "requests should decode together";
    EXPECT_GT(mixed, 0) << "prompt chunks should share passes with decoding sequences";
    if (use_medusa) {
      EXPECT_GT(medusa_batched, 0) << "trees of several sequences in one pass";
    }
  }
}

// Context lookup drafts in a batch: some sequences verify a chain from their own context, others
// the heads' tree, in the same passes; each request is still exactly plain decoding alone.
TEST(SchedulerTest, ContextLookupDraftsInABatchMatchPlainDecodingAlone) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  EngineOptions engine_options;
  engine_options.model_path = kStoriesModel;
  engine_options.tokenizer_path = kStoriesTokenizer;
  engine_options.kv_cache_bytes = 16ll << 20;
  engine_options.lookup_tokens = 4;
  auto engine = Engine::Create(engine_options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  InstallRandomHeads(**engine);
  const std::vector<GenerationRequest> requests = SixteenRequests(**engine);
  std::vector<GenerationResult> plain;
  for (GenerationRequest r : requests) {
    r.use_medusa = false;
    plain.push_back(Alone(**engine, r));
  }
  std::vector<std::unique_ptr<Collector>> collectors;
  {
    SchedulerOptions options;
    options.medusa_max_batch = 16;
    Scheduler scheduler(**engine, options);
    for (const GenerationRequest& r : requests) {
      collectors.push_back(std::make_unique<Collector>());
      MustSubmit(scheduler, r, *collectors.back());
    }
    int lookup_steps = 0, other_steps = 0;
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(collectors[i]->WaitDone()) << "request " << i;
      ExpectSameAsAlone(*collectors[i], plain[i], "request " + std::to_string(i));
      const GenerationResult result = collectors[i]->result();
      lookup_steps += result.lookup_steps;
      other_steps += result.steps - 1 - result.lookup_steps;  // the first token comes from the prompt's pass
    }
    EXPECT_GT(lookup_steps, 0);
    EXPECT_GT(other_steps, 0) << "steps without a repeat verify the heads' tree";
  }
  EXPECT_EQ((*engine)->kv_allocator().num_used(), 0);
}

// Seeded sampling: each request owns its sampler, so batching does not change what it
// samples (with Medusa too, while the tree stays the same at every batch size).
TEST(SchedulerTest, SeededSamplingIsTheSameAsAlone) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = MakeEngine(kStoriesModel);
  ASSERT_NE(engine, nullptr);
  InstallRandomHeads(*engine);
  std::vector<GenerationRequest> requests = SixteenRequests(*engine);
  requests.resize(6);
  std::vector<GenerationResult> alone;
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].sampling.temperature = 0.9f;
    requests[i].sampling.top_p = 0.95f;
    requests[i].sampling.seed = 100 + i;
    requests[i].use_medusa = i % 2 == 0;
    alone.push_back(Alone(*engine, requests[i]));
  }
  SchedulerOptions options;
  options.medusa_max_batch = 16;
  Scheduler scheduler(*engine, options);
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const GenerationRequest& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    MustSubmit(scheduler, r, *collectors.back());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(collectors[i]->WaitDone());
    ExpectSameAsAlone(*collectors[i], alone[i], "sampled request " + std::to_string(i));
  }
}

// The same on SmolLM2 (49152-token vocabulary, quantized weights, chat prompts), four
// requests at once with a chain tree verified for all of them in each pass.
TEST(SchedulerTest, SmolLM2ConcurrentRequestsMatchGenerateAlone) {
  ASSERT_MODEL_PRESENT(kSmolModel);
  auto engine = MakeEngine(kSmolModel, 64ll << 20);
  ASSERT_NE(engine, nullptr);
  InstallRandomHeads(*engine, "chain");
  const std::vector<std::string> prompts = testing::AlpacaPrompts(4, 200);
  ASSERT_EQ(prompts.size(), 4u);
  std::vector<GenerationRequest> requests;
  std::vector<GenerationResult> alone;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt_ids = *EncodePrompt(engine->tokenizer(), prompts[i], /*chat=*/true);
    r.max_tokens = 12 + 4 * static_cast<int>(i);
    if (i == 1) r.stop_strings = {"."};
    requests.push_back(r);
    alone.push_back(Alone(*engine, r));
  }
  StepLog log;
  {
    // Declared before the scheduler, so they outlive it: when an assertion below returns
    // early, the scheduler's destructor still calls their on_done (found by TSan as a
    // heap-use-after-free after a WaitDone timeout).
    std::vector<std::unique_ptr<Collector>> collectors;
    Scheduler scheduler(*engine, SchedulerOptions{.step_observer = log.Observer()});
    for (const GenerationRequest& r : requests) {
      collectors.push_back(std::make_unique<Collector>());
      MustSubmit(scheduler, r, *collectors.back());
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(collectors[i]->WaitDone());
      ExpectSameAsAlone(*collectors[i], alone[i], prompts[i]);
    }
  }
  int medusa_batched = 0;
  for (const StepReport& s : log.Take()) medusa_batched += s.medusa && s.batch_size > 1;
  EXPECT_GT(medusa_batched, 0);
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

// 3. Cancelling mid-stream and a deadline passing mid-stream end those requests with
// Cancelled / DeadlineExceeded and free their blocks; a request beside them is unaffected.
TEST(SchedulerTest, CancelAndDeadlineFreeBlocksAndSpareOthers) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = MakeEngine(kStoriesModel);
  ASSERT_NE(engine, nullptr);
  InstallRandomHeads(*engine);
  GenerationRequest neighbour = Request(*engine, "The little dog", 120);
  const GenerationResult neighbour_alone = Alone(*engine, neighbour);
  GenerationRequest endless = Request(*engine, "Once upon a time", 450);
  endless.ignore_eos = true;

  {
    Scheduler scheduler(*engine, SchedulerOptions{});
    Collector cancelled(std::chrono::milliseconds(3));
    Collector expired(std::chrono::milliseconds(3));
    Collector beside;
    const uint64_t id = MustSubmit(scheduler, endless, cancelled);
    MustSubmit(scheduler, endless, expired, absl::Now() + absl::Milliseconds(300));
    MustSubmit(scheduler, neighbour, beside);
    ASSERT_TRUE(cancelled.WaitForTokens(10));
    scheduler.Cancel(id);
    scheduler.Cancel(id);      // twice: ignored
    scheduler.Cancel(987654);  // unknown: ignored
    ASSERT_TRUE(cancelled.WaitDone());
    EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled) << cancelled.status();
    EXPECT_LT(cancelled.ids().size(), 450u);
    EXPECT_EQ(cancelled.done_calls(), 1);

    ASSERT_TRUE(expired.WaitDone());
    EXPECT_EQ(expired.status().code(), absl::StatusCode::kDeadlineExceeded) << expired.status();
    EXPECT_GT(expired.ids().size(), 0u) << "the deadline should pass mid-stream";
    EXPECT_LT(expired.ids().size(), 450u);

    ASSERT_TRUE(beside.WaitDone());
    ExpectSameAsAlone(beside, neighbour_alone, "neighbour");

    // A deadline already past ends the request while it waits.
    Collector late;
    MustSubmit(scheduler, neighbour, late, absl::Now() - absl::Seconds(1));
    ASSERT_TRUE(late.WaitDone());
    EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_TRUE(late.ids().empty());

    EXPECT_EQ(scheduler.load().kv_blocks_used, 0);
    EXPECT_EQ(scheduler.load().running + scheduler.load().waiting, 0);

    // Cancelling the only running request: its blocks are back before on_done.
    Collector solo(std::chrono::milliseconds(2), engine.get());
    const uint64_t solo_id = MustSubmit(scheduler, endless, solo);
    ASSERT_TRUE(solo.WaitForTokens(5));
    scheduler.Cancel(solo_id);
    ASSERT_TRUE(solo.WaitDone());
    EXPECT_EQ(solo.status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(solo.kv_used_at_done(), 0) << "blocks must be free before on_done";
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

// 4. The bounded queue answers ResourceExhausted at once, bad requests InvalidArgument;
// Drain finishes what runs and refuses new work; a short grace cancels the rest with
// Unavailable; the destructor ends everything pending with Unavailable.
TEST(SchedulerTest, QueueLimitsValidationDrainAndShutdown) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = MakeEngine(kStoriesModel);
  ASSERT_NE(engine, nullptr);
  InstallRandomHeads(*engine);
  GenerationRequest endless = Request(*engine, "Once upon a time", 450);
  endless.ignore_eos = true;
  const GenerationRequest short_one = Request(*engine, "Tim liked to play", 30);
  const GenerationResult short_alone = Alone(*engine, short_one);

  {  // Queue full and validation.
    SchedulerOptions options;
    options.max_running = 1;
    options.max_waiting = 2;
    Scheduler scheduler(*engine, options);
    Collector a(std::chrono::milliseconds(2)), b, c;
    const uint64_t a_id = MustSubmit(scheduler, endless, a);
    const uint64_t b_id = MustSubmit(scheduler, short_one, b);
    const uint64_t c_id = MustSubmit(scheduler, short_one, c);
    Collector refused;
    absl::StatusOr<uint64_t> full = scheduler.Submit(short_one, refused.Callbacks());
    EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
    EXPECT_EQ(refused.done_calls(), 0) << "a refused request gets no callback";
    EXPECT_EQ(scheduler.load().waiting + scheduler.load().running, 3);

    GenerationRequest empty = short_one;
    empty.prompt_ids.clear();
    GenerationRequest zero = short_one;
    zero.max_tokens = 0;
    GenerationRequest hot = short_one;
    hot.sampling.temperature = -1;
    GenerationRequest outside = short_one;
    outside.prompt_ids.push_back(engine->config().vocab_size);
    for (const GenerationRequest& bad : {empty, zero, hot, outside}) {
      absl::StatusOr<uint64_t> id = scheduler.Submit(bad, Collector().Callbacks());
      EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << id.status();
    }
    scheduler.Cancel(a_id);
    ASSERT_TRUE(b.WaitDone());
    ASSERT_TRUE(c.WaitDone());
    ExpectSameAsAlone(b, short_alone, "b");
    ExpectSameAsAlone(c, short_alone, "c");
    EXPECT_NE(b_id, c_id);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kCancelled);
    // Room again: it serves normally.
    Collector d;
    MustSubmit(scheduler, short_one, d);
    ASSERT_TRUE(d.WaitDone());
    ExpectSameAsAlone(d, short_alone, "after the queue was full");
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);

  {  // Drain within the grace period.
    Scheduler scheduler(*engine, SchedulerOptions{});
    std::vector<std::unique_ptr<Collector>> running;
    for (int i = 0; i < 4; ++i) {
      running.push_back(std::make_unique<Collector>());
      MustSubmit(scheduler, short_one, *running.back());
    }
    EXPECT_TRUE(scheduler.Drain(absl::Seconds(30)));
    for (auto& c : running) {
      EXPECT_EQ(c->done_calls(), 1);
      ExpectSameAsAlone(*c, short_alone, "drained");
    }
    absl::StatusOr<uint64_t> after = scheduler.Submit(short_one, Collector().Callbacks());
    EXPECT_EQ(after.status().code(), absl::StatusCode::kUnavailable) << after.status();
  }
  {  // Drain past its grace: what is left ends with Unavailable.
    SchedulerOptions options;
    options.max_running = 1;
    Scheduler scheduler(*engine, options);
    Collector slow(std::chrono::milliseconds(5)), queued;
    MustSubmit(scheduler, endless, slow);
    MustSubmit(scheduler, endless, queued);
    ASSERT_TRUE(slow.WaitForTokens(2));
    EXPECT_FALSE(scheduler.Drain(absl::Milliseconds(100)));
    EXPECT_EQ(slow.done_calls(), 1);
    EXPECT_EQ(queued.done_calls(), 1);
    EXPECT_EQ(slow.status().code(), absl::StatusCode::kUnavailable) << slow.status();
    EXPECT_EQ(queued.status().code(), absl::StatusCode::kUnavailable) << queued.status();
    EXPECT_EQ(scheduler.load().kv_blocks_used, 0);
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);

  // The destructor ends running and waiting requests with Unavailable.
  Collector slow(std::chrono::milliseconds(5)), queued1, queued2;
  {
    SchedulerOptions options;
    options.max_running = 1;
    Scheduler scheduler(*engine, options);
    MustSubmit(scheduler, endless, slow);
    MustSubmit(scheduler, endless, queued1);
    MustSubmit(scheduler, short_one, queued2);
    ASSERT_TRUE(slow.WaitForTokens(2));
  }
  for (const Collector* c : {&slow, &queued1, &queued2}) {
    EXPECT_EQ(c->done_calls(), 1);
    EXPECT_EQ(c->status().code(), absl::StatusCode::kUnavailable) << c->status();
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

// 5. A pool of 16 blocks (256 slots) under load: requests that fit run a few at a time
// and match Generate; a prompt bigger than the pool is refused at once; a request
// whose generation outgrows the whole pool ends with ResourceExhausted, and the ones
// queued behind it still complete. No block leaks.
TEST(SchedulerTest, SmallKvPoolUnderLoad) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto probe = MakeEngine(kStoriesModel, 1 << 20);
  ASSERT_NE(probe, nullptr);
  const int64_t block_bytes = probe->backend().KvBytesPerBlock(16);
  probe.reset();
  auto engine = MakeEngine(kStoriesModel, 16 * block_bytes);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->kv_allocator().num_blocks(), 16);
  InstallRandomHeads(*engine);

  std::vector<GenerationRequest> requests = SixteenRequests(*engine);
  for (GenerationRequest& r : requests) r.max_tokens = std::min(r.max_tokens, 70);
  std::vector<GenerationResult> alone;
  for (const GenerationRequest& r : requests) alone.push_back(Alone(*engine, r));

  GenerationRequest too_big = requests[0];
  too_big.prompt_ids.assign(300, too_big.prompt_ids[1]);
  too_big.prompt_ids[0] = engine->tokenizer().bos_id();
  GenerationRequest outgrows = Request(*engine, "Once upon a time", 400);
  outgrows.ignore_eos = true;

  StepLog log;
  {
    Scheduler scheduler(*engine, SchedulerOptions{.step_observer = log.Observer()});
    Collector refused;
    absl::StatusOr<uint64_t> id = scheduler.Submit(too_big, refused.Callbacks());
    EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted) << id.status();

    std::vector<std::unique_ptr<Collector>> collectors;
    for (const GenerationRequest& r : requests) {
      collectors.push_back(std::make_unique<Collector>());
      MustSubmit(scheduler, r, *collectors.back());
    }
    Collector big;
    MustSubmit(scheduler, outgrows, big);
    std::vector<std::unique_ptr<Collector>> after;
    for (size_t i = 0; i < 4; ++i) {
      after.push_back(std::make_unique<Collector>());
      MustSubmit(scheduler, requests[i], *after.back());
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(collectors[i]->WaitDone());
      ExpectSameAsAlone(*collectors[i], alone[i], "request " + std::to_string(i));
    }
    ASSERT_TRUE(big.WaitDone());
    EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
    EXPECT_GT(big.ids().size(), 200u) << "it should run until the pool is full";
    for (size_t i = 0; i < after.size(); ++i) {
      ASSERT_TRUE(after[i]->WaitDone());
      ExpectSameAsAlone(*after[i], alone[i], "after the big one: " + std::to_string(i));
    }
    EXPECT_EQ(scheduler.load().kv_blocks_used, 0);
    EXPECT_EQ(scheduler.load().kv_blocks_total, 16);
  }
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
  int max_batch = 0;
  for (const StepReport& s : log.Take()) max_batch = std::max(max_batch, s.batch_size);
  EXPECT_GE(max_batch, 2) << "requests that fit together should run together";
}

// Random Medusa heads for stories260K at `heads`, with `auto_tree` (a `medusa tree --auto`
// choice, written by hand) beside them.
void SaveHeadsWithAutoTree(const std::string& heads, const std::string& auto_tree) {
  auto probe = MakeEngine(kStoriesModel, 1 << 20);
  ASSERT_NE(probe, nullptr);
  ASSERT_TRUE(SaveMedusaHeads(heads, RandomMedusaHeads(probe->config(), 4, 1, false, 21, 0.05f), nullptr).ok());
  std::ofstream(AutoTreePathFor(heads)) << auto_tree;
}

// 6. Load-adaptive Medusa from an auto tree whose choice is a chain at batch size 1 and
// plain decoding above: the steps say so, and the outputs do not change.
TEST(SchedulerTest, AutoTreeShrinksToPlainAsTheBatchGrows) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = ::testing::TempDir() + "/scheduler_auto_heads.safetensors";
  ASSERT_NO_FATAL_FAILURE(SaveHeadsWithAutoTree(heads, R"({"choice": {
      "1": {"nodes": 3, "paths": [[0], [1], [0, 0]]},
      "2": {"nodes": 0, "paths": []}}})"));
  auto engine = MakeEngine(kStoriesModel, 16ll << 20, heads, "auto");
  ASSERT_NE(engine, nullptr);
  ASSERT_NE(engine->auto_tree(), nullptr);

  const std::vector<GenerationRequest> all = SixteenRequests(*engine);
  const std::vector<GenerationRequest> requests(all.begin(), all.begin() + 4);
  std::vector<GenerationResult> alone;
  for (const GenerationRequest& r : requests) alone.push_back(Alone(*engine, r));

  StepLog log;
  {
    Scheduler scheduler(*engine, SchedulerOptions{.step_observer = log.Observer()});
    Collector first;  // alone: batch size 1
    MustSubmit(scheduler, requests[0], first);
    ASSERT_TRUE(first.WaitDone());
    ExpectSameAsAlone(first, alone[0], "alone");
    std::vector<std::unique_ptr<Collector>> collectors;
    for (const GenerationRequest& r : requests) {
      collectors.push_back(std::make_unique<Collector>());
      MustSubmit(scheduler, r, *collectors.back());
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(collectors[i]->WaitDone());
      ExpectSameAsAlone(*collectors[i], alone[i], "together " + std::to_string(i));
    }
  }
  int medusa_alone = 0, plain_batched = 0;
  for (const StepReport& s : log.Take()) {
    if (s.batch_size > 1) {
      EXPECT_FALSE(s.medusa) << "plain decoding above batch size 1";
      EXPECT_EQ(s.tree_nodes, 1);
      ++plain_batched;
    }
    if (s.batch_size == 1 && s.medusa) {
      EXPECT_EQ(s.tree_nodes, 4);
      ++medusa_alone;
    }
  }
  EXPECT_GT(medusa_alone, 5);
  EXPECT_GT(plain_batched, 5);
  EXPECT_EQ(engine->kv_allocator().num_used(), 0);
}

// Under an auto tree with timings, a context chain is as long as pays at the batch size: the
// expected tokens (from the chains' keep rates) over the measured overhead of that many nodes,
// against the heads' tree's expected speedup. Here at batch 1 four nodes are too dear and at
// batch 2 no chain beats the heads; with a tree chosen by hand, chains of up to --lookup-tokens
// (8) run, and keep four tokens and more on these stories.
TEST(SchedulerTest, ContextChainsAreAsLongAsTheAutoTreesTimingsPay) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = ::testing::TempDir() + "/scheduler_lookup_heads.safetensors";
  ASSERT_NO_FATAL_FAILURE(SaveHeadsWithAutoTree(heads, R"({"choice": {
      "1": {"nodes": 1, "paths": [[0]]}, "2": {"nodes": 1, "paths": [[0]]}},
      "measurements": [
        {"batch_size": 1, "nodes": 1, "overhead": 1.1, "expected_speedup": 1.2},
        {"batch_size": 1, "nodes": 2, "overhead": 1.2, "expected_speedup": 1.1},
        {"batch_size": 1, "nodes": 3, "overhead": 1.3, "expected_speedup": 1.0},
        {"batch_size": 1, "nodes": 4, "overhead": 5.0, "expected_speedup": 0.3},
        {"batch_size": 2, "nodes": 1, "overhead": 3.0, "expected_speedup": 1.3}]})"));
  auto run = [&](const std::string& tree, int concurrent, std::vector<StepReport>* steps) {
    EngineOptions engine_options;
    engine_options.model_path = kStoriesModel;
    engine_options.tokenizer_path = kStoriesTokenizer;
    engine_options.kv_cache_bytes = 16ll << 20;
    engine_options.heads_path = heads;
    engine_options.tree = tree;
    engine_options.lookup_tokens = 8;
    auto engine = Engine::Create(engine_options);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return std::vector<GenerationResult>{};
    // Prompts the model goes on repeating.
    std::vector<GenerationRequest> requests = {Request(**engine, "It is a small box. It is a small box. It is", 120),
                                               Request(**engine, "Tom and Sam play. Tom and Sam play. Tom", 120)};
    requests.resize(concurrent);
    std::vector<GenerationResult> results;
    for (GenerationRequest& r : requests) {
      r.ignore_eos = true;
      GenerationRequest plain = r;
      plain.use_medusa = false;
      results.push_back(Alone(**engine, plain));
    }
    StepLog log;
    {
      std::vector<std::unique_ptr<Collector>> collectors;
      SchedulerOptions options;
      options.medusa_max_batch = 16;
      options.step_observer = log.Observer();
      Scheduler scheduler(**engine, options);
      for (const GenerationRequest& r : requests) {
        collectors.push_back(std::make_unique<Collector>());
        MustSubmit(scheduler, r, *collectors.back());
      }
      for (size_t i = 0; i < requests.size(); ++i) {
        EXPECT_TRUE(collectors[i]->WaitDone());
        ExpectSameAsAlone(*collectors[i], results[i], tree + " request " + std::to_string(i));
        results[i] = collectors[i]->result();
      }
    }
    *steps = log.Take();
    for (const GenerationResult& r : results) {
      std::printf("%s x%d: %d steps, %d from the context keeping %d; longest kept", tree.c_str(), concurrent, r.steps,
                  r.lookup_steps, r.lookup_accepted_tokens);
      for (int c : r.accepted_length_counts) std::printf(" %d", c);
      std::printf("\n");
    }
    return results;
  };
  auto longest_kept = [](const std::vector<GenerationResult>& results) {
    size_t longest = 0;
    for (const GenerationResult& r : results) {
      for (size_t kept = 0; kept < r.accepted_length_counts.size(); ++kept) {
        if (r.accepted_length_counts[kept] > 0) longest = std::max(longest, kept);
      }
    }
    return longest;
  };
  std::vector<StepReport> steps;
  // A hand-chosen one-node tree: chains of up to 8.
  EXPECT_GE(longest_kept(run("chain", 1, &steps)), 4u);
  // The auto tree's timings: at most 3 at batch 1 (4 nodes cost 5x a plain step).
  const std::vector<GenerationResult> alone = run("auto", 1, &steps);
  EXPECT_GT(alone[0].lookup_steps, 0);
  EXPECT_LE(longest_kept(alone), 3u);
  // At batch 2 the heads' tree is expected to do better than any chain: none is verified.
  run("auto", 2, &steps);
  int batch_two = 0;
  for (const StepReport& s : steps) {
    if (s.batch_size != 2) continue;
    ++batch_two;
    EXPECT_EQ(s.lookup_chains, 0);
  }
  EXPECT_GT(batch_two, 50);
}

// 6b. Medusa heads' dynamic trees sized by the auto tree (EngineOptions::dynamic_tree): each step
// keeps as many nodes as the planner's tree for the batch size has (3 alone, 2 at batch 2, none
// above), chosen out of an envelope grown from the calibration; outputs do not change.
TEST(SchedulerTest, DynamicTreesTakeTheirSizeFromTheAutoTreePerBatchSize) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = ::testing::TempDir() + "/scheduler_dynamic_auto_heads.safetensors";
  ASSERT_NO_FATAL_FAILURE(SaveHeadsWithAutoTree(heads, R"({"choice": {
      "1": {"nodes": 3, "paths": [[0], [1], [0, 0]]},
      "2": {"nodes": 2, "paths": [[0], [1]]},
      "3": {"nodes": 0, "paths": []}}})"));
  std::ofstream(CalibrationPathFor(heads)) << R"({"topk_accuracy": [
      [0.4, 0.5, 0.55, 0.6], [0.2, 0.3, 0.35, 0.4], [0.1, 0.2, 0.25, 0.3], [0.05, 0.1, 0.15, 0.2]],
      "temperature": [1.5, 1.5, 1.5, 1.5]})";
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 16ll << 20;
  options.heads_path = heads;
  options.tree = "auto";
  options.dynamic_tree = true;
  absl::StatusOr<std::unique_ptr<Engine>> created = Engine::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  Engine& engine = **created;
  ASSERT_NE(engine.dynamic_envelope(), nullptr);
  EXPECT_GT(engine.dynamic_envelope()->num_nodes(), 4) << "an envelope bigger than any budget";

  const std::vector<GenerationRequest> all = SixteenRequests(engine);
  const std::vector<GenerationRequest> requests = {all[2], all[6], all[10]};  // 94-110 tokens, no stop strings
  std::vector<GenerationResult> alone;
  for (GenerationRequest r : requests) {
    r.use_medusa = false;
    alone.push_back(Alone(engine, r));
  }
  StepLog log;
  {
    Scheduler scheduler(engine, SchedulerOptions{.step_observer = log.Observer()});
    Collector first;
    MustSubmit(scheduler, requests[0], first);
    ASSERT_TRUE(first.WaitDone());
    ExpectSameAsAlone(first, alone[0], "alone");
    for (int together : {2, 3}) {
      std::vector<std::unique_ptr<Collector>> collectors;
      for (int i = 0; i < together; ++i) {
        collectors.push_back(std::make_unique<Collector>());
        MustSubmit(scheduler, requests[i], *collectors.back());
      }
      for (int i = 0; i < together; ++i) {
        ASSERT_TRUE(collectors[i]->WaitDone());
        ExpectSameAsAlone(*collectors[i], alone[i], absl::StrCat(together, " together, ", i));
      }
    }
  }
  std::map<int, std::set<int>> nodes_by_batch;
  for (const StepReport& s : log.Take()) {
    if (s.batch_size > 0) nodes_by_batch[s.batch_size].insert(s.tree_nodes);
  }
  // A step may verify fewer nodes than the budget (a dynamic tree keeps only paths it can fill),
  // never more, and most steps fill it.
  std::string seen;
  for (const auto& [batch, nodes] : nodes_by_batch) {
    for (int n : nodes) absl::StrAppend(&seen, " batch ", batch, ": ", n, " nodes;");
  }
  ASSERT_TRUE(nodes_by_batch.count(1) && nodes_by_batch.count(2) && nodes_by_batch.count(3)) << seen;
  EXPECT_EQ(*nodes_by_batch[1].rbegin(), 4);
  EXPECT_EQ(*nodes_by_batch[2].rbegin(), 3);
  EXPECT_EQ(nodes_by_batch[3], std::set<int>{1}) << "plain decoding where the auto tree chose it";
  EXPECT_EQ(engine.kv_allocator().num_used(), 0);

  // The nodes are the step's most likely ones, not the planner's: the same heads with the auto
  // tree's own paths accept differently (same output).
  options.dynamic_tree = false;
  absl::StatusOr<std::unique_ptr<Engine>> fixed = Engine::Create(options);
  ASSERT_TRUE(fixed.ok()) << fixed.status();
  int differ = 0;
  for (const GenerationRequest& r : requests) {
    const GenerationResult grown = Alone(engine, r), planned = Alone(**fixed, r);
    EXPECT_EQ(grown.token_ids, planned.token_ids);
    std::vector<int> a = grown.accepted_per_position, b = planned.accepted_per_position;
    a.resize(std::max(a.size(), b.size()));  // counted to each engine's deepest tree
    b.resize(a.size());
    differ += a != b ? 1 : 0;
  }
  EXPECT_GT(differ, 0);
  options.dynamic_tree = true;

  // It needs an auto tree to size it, and a calibration to grow its envelope from.
  options.tree = "mc_sim_7b_63";
  absl::Status s = Engine::Create(options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("--tree auto"), std::string::npos) << s;
  options.tree = "auto";
  std::filesystem::remove(CalibrationPathFor(heads));
  s = Engine::Create(options).status();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("calibration"), std::string::npos) << s;
}

// Plain probe steps (StepOptions::plain_probe_every, the server's --overhead-probe-every): with
// Medusa on and one greedy sequence, every 4th step that would verify a tree decodes plainly,
// so plain steps are timed at batch size 1; the output is still exactly Generate's alone. A
// sampled sequence is never probed (its seeded output would otherwise depend on the load).
TEST(SchedulerTest, PlainProbeStepsKeepGreedyOutputAndSpareSampledRequests) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  auto engine = MakeEngine(kStoriesModel);
  ASSERT_NE(engine, nullptr);
  InstallRandomHeads(*engine);
  GenerationRequest greedy = Request(*engine, "Once upon a time", 80);
  greedy.ignore_eos = true;
  GenerationRequest sampled = greedy;
  sampled.sampling.temperature = 0.9f;
  sampled.sampling.seed = 5;
  const GenerationResult greedy_alone = Alone(*engine, greedy);
  const GenerationResult sampled_alone = Alone(*engine, sampled);

  auto count = [](const std::vector<StepReport>& steps, int* medusa, int* plain) {
    *medusa = *plain = 0;
    for (const StepReport& s : steps) {
      if (s.batch_size != 1 || s.prefill_tokens > 0) continue;
      ++(s.medusa ? *medusa : *plain);
    }
  };
  // Plain and Medusa steps at batch size 1 for one request, probing every `every` tree steps.
  auto run = [&](const GenerationRequest& request, const GenerationResult& alone, int every, int* medusa, int* plain) {
    StepLog log;
    {
      Scheduler scheduler(*engine, SchedulerOptions{.plain_probe_every = every, .step_observer = log.Observer()});
      Collector c;
      MustSubmit(scheduler, request, c);
      ASSERT_TRUE(c.WaitDone());
      ExpectSameAsAlone(c, alone, absl::StrCat("probing every ", every));
    }
    count(log.Take(), medusa, plain);
  };
  int medusa = 0, plain = 0, medusa_unprobed = 0, plain_unprobed = 0;
  run(greedy, greedy_alone, 0, &medusa_unprobed, &plain_unprobed);
  run(greedy, greedy_alone, 4, &medusa, &plain);
  // One in four tree steps became a probe (a step with one token left is plain anyway).
  const int probes = plain - plain_unprobed;
  EXPECT_GE(probes, (medusa + probes) / 4 - 1) << medusa << " Medusa, " << plain << " plain steps";
  EXPECT_LE(probes, (medusa + probes) / 4 + 1) << medusa << " Medusa, " << plain << " plain steps";
  EXPECT_GT(medusa, 5);

  run(sampled, sampled_alone, 0, &medusa_unprobed, &plain_unprobed);
  run(sampled, sampled_alone, 4, &medusa, &plain);
  EXPECT_EQ(plain, plain_unprobed) << "a sampled sequence was probed";
  EXPECT_EQ(medusa, medusa_unprobed);
}

}  // namespace
}  // namespace medusa
