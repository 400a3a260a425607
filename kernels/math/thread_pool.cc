#include "kernels/math/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace medusa::math {
namespace {

// How long a waiting thread spins before it sleeps: longer than the serial gap between two
// kernels of a forward pass (a few microseconds), far shorter than a scheduler time slice.
constexpr std::chrono::microseconds kSpin{40};

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Spins until done() or kSpin elapses; returns done().
template <typename Done>
bool SpinUntil(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (done()) return true;
    CpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

// Set while this thread runs a pool job: a nested Run executes inline instead of deadlocking.
thread_local bool t_in_job = false;

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(std::clamp(threads, 1, (1 << kThreadBits) - 1)) {
  workers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  state_.fetch_add(uint64_t{1} << kThreadBits);
  state_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  t_in_job = true;  // a worker never publishes jobs of its own
  uint64_t seen = 0;
  for (;;) {
    if (!SpinUntil([&] { return state_.load(std::memory_order_acquire) != seen; })) {
      // Announce the sleep before the last check, so a publisher either sees us asleep
      // (and wakes us) or we see its new state.
      sleeping_workers_.fetch_add(1);
      while (state_.load() == seen) state_.wait(seen);
      sleeping_workers_.fetch_sub(1);
    }
    seen = state_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    const int threads = static_cast<int>(seen & ((uint64_t{1} << kThreadBits) - 1));
    if (index < threads) {
      (*job_)(index, threads);
      if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) pending_.notify_one();
    }
  }
}

void ThreadPool::Run(int threads, absl::FunctionRef<void(int, int)> fn) {
  threads = std::min(threads, threads_);
  if (threads <= 1 || t_in_job) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(threads - 1);
  // Publishes job_ and pending_ with the new state (seq_cst).
  const uint64_t generation = (state_.load() >> kThreadBits) + 1;
  state_.store((generation << kThreadBits) | static_cast<uint64_t>(threads));
  if (sleeping_workers_.load() > 0) state_.notify_all();

  t_in_job = true;
  fn(0, threads);
  t_in_job = false;

  if (!SpinUntil([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
    caller_sleeping_.store(true);
    for (int p; (p = pending_.load()) != 0;) pending_.wait(p);
    caller_sleeping_.store(false);
  }
  job_ = nullptr;
}

void ThreadPool::ParallelFor(int threads, int tasks, absl::FunctionRef<void(int, int)> fn) {
  if (tasks <= 0) return;
  std::atomic<int> next{0};
  Run(std::min(threads, tasks), [&](int thread, int) {
    for (int task; (task = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) fn(task, thread);
  });
}

void ThreadPool::ForRanges(int n, long long work, long long min_work_per_thread,
                           absl::FunctionRef<void(int, int)> fn) {
  if (n <= 0) return;
  const long long by_work = min_work_per_thread > 0 ? work / min_work_per_thread : threads_;
  const int threads = static_cast<int>(std::clamp<long long>(by_work, 1, std::min(threads_, n)));
  Run(threads, [&](int thread, int count) {
    const int begin = static_cast<int>(static_cast<long long>(n) * thread / count);
    const int end = static_cast<int>(static_cast<long long>(n) * (thread + 1) / count);
    if (begin < end) fn(begin, end);
  });
}

}  // namespace medusa::math
