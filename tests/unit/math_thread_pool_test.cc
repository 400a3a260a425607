// The CPU kernels' fork/join pool: every task runs exactly once, jobs follow one another
// without mixing, a worker asleep after a long idle wakes up, nested calls run inline.

#include "kernels/math/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace medusa::math {
namespace {

TEST(ThreadPool, EveryTaskRunsExactlyOnce) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  for (int tasks : {0, 1, 2, 3, 7, 1000}) {
    std::vector<std::atomic<int>> hits(tasks);
    pool.ParallelFor(3, tasks, [&](int task, int thread) {
      ASSERT_GE(thread, 0);
      ASSERT_LT(thread, 3);
      hits[task].fetch_add(1);
    });
    for (int t = 0; t < tasks; ++t) EXPECT_EQ(hits[t].load(), 1) << "task " << t << " of " << tasks;
  }
}

TEST(ThreadPool, RunGivesEachThreadItsIndex) {
  ThreadPool pool(2);
  for (int threads : {1, 2, 5}) {
    std::vector<std::atomic<int>> seen(2);
    std::atomic<int> count_seen{-1};
    pool.Run(threads, [&](int thread, int count) {
      seen[thread].fetch_add(1);
      count_seen.store(count);
    });
    const int expected = std::min(threads, 2);
    EXPECT_EQ(count_seen.load(), expected);
    for (int t = 0; t < 2; ++t) EXPECT_EQ(seen[t].load(), t < expected ? 1 : 0) << "threads " << threads;
  }
}

// Many short jobs back to back: a worker must never run a job twice or skip one.
TEST(ThreadPool, BackToBackJobsDoNotMix) {
  ThreadPool pool(2);
  long long total = 0;
  for (int job = 0; job < 5000; ++job) {
    std::atomic<int> runs{0};
    pool.Run(2, [&](int, int) { runs.fetch_add(1); });
    ASSERT_EQ(runs.load(), 2) << "job " << job;
    total += runs.load();
  }
  EXPECT_EQ(total, 10000);
}

// Past the spin window the worker sleeps; the next job must still wake it.
TEST(ThreadPool, WakesSleepingWorkers) {
  ThreadPool pool(2);
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::atomic<int> runs{0};
    pool.Run(2, [&](int thread, int) {
      if (thread == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // caller waits too
      runs.fetch_add(1);
    });
    EXPECT_EQ(runs.load(), 2);
  }
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.Run(2, [&](int, int) {
    pool.ParallelFor(2, 4, [&](int, int thread) {
      EXPECT_EQ(thread, 0);
      inner.fetch_add(1);
    });
  });
  EXPECT_EQ(inner.load(), 8);
}

TEST(ThreadPool, ForRangesCoversEachIndexOnce) {
  ThreadPool pool(2);
  for (long long work : {1LL, 1LL << 20}) {
    std::vector<std::atomic<int>> hits(101);
    std::atomic<int> calls{0};
    pool.ForRanges(101, work, 1 << 14, [&](int begin, int end) {
      calls.fetch_add(1);
      for (int i = begin; i < end; ++i) hits[i].fetch_add(1);
    });
    for (int i = 0; i < 101; ++i) EXPECT_EQ(hits[i].load(), 1);
    EXPECT_EQ(calls.load(), work == 1 ? 1 : 2) << "small work stays on one thread";
  }
}

}  // namespace
}  // namespace medusa::math
