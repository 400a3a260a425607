#pragma once
// A small fork/join thread pool for the CPU kernels.
//
// Why not OpenMP: libgomp waits at its barriers by spinning a fixed count of `pause`
// instructions (GOMP_SPINCOUNT, read once from the environment at start-up). On recent
// Intel cores one `pause` takes ~140 cycles, so the default spin lasts milliseconds; when
// the cores are shared with other work (and on a 2-core machine they always are), the
// spinning thread eats the time its partner needs and a decode step ran 5-8x slower than
// on one thread. This pool spins for a bounded wall-clock time (long enough to bridge the
// gap between two kernels of one forward pass) and then sleeps on a futex.

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace medusa::math {

class ThreadPool {
 public:
  // `threads` >= 1 counts the calling thread: threads - 1 workers are started.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // Runs fn(thread, threads) once on each of `threads` (<= size()) threads, the caller being
  // thread 0, and returns when all are done. One caller at a time (the pool belongs to one
  // backend, which serves one forward pass at a time). Called from inside a job (nested), or with
  // threads <= 1, it runs fn(0, 1) on the caller alone.
  void Run(int threads, absl::FunctionRef<void(int thread, int threads)> fn);

  // Runs fn(task, thread) for every task in [0, tasks), handing tasks out one at a time.
  void ParallelFor(int threads, int tasks, absl::FunctionRef<void(int task, int thread)> fn);

  // Splits [0, n) into one contiguous range per thread: fn(begin, end). Work below
  // `min_work_per_thread` (in the caller's units, `work` in all) is not worth a second thread.
  void ForRanges(int n, long long work, long long min_work_per_thread,
                 absl::FunctionRef<void(int begin, int end)> fn);

 private:
  void WorkerLoop(int index);

  const int threads_;
  std::vector<std::thread> workers_;

  // A job is published by a new value of state_: a generation count above kThreadBits bits
  // holding how many threads take part (workers with index < that run it). One word, so a
  // worker never pairs one job's generation with another job's thread count.
  static constexpr int kThreadBits = 16;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> sleeping_workers_{0};
  std::atomic<int> pending_{0};  // workers still running the current job
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  // Valid while pending_ > 0: a participating worker reads it before it counts down.
  const absl::FunctionRef<void(int, int)>* job_ = nullptr;
};

}  // namespace medusa::math
