#pragma once
// The server's Prometheus metrics (the contract in ENGINEERING.md), served by
// prometheus-cpp on their own port. Everything is measured: step reports from the
// scheduler, request times from the streams, and live counts from the scheduler at
// scrape time.
//
//   medusa_generated_tokens_total, medusa_prompt_tokens_total,
//   medusa_decode_steps_total (sequence-steps: a step of a batch of 4 counts 4),
//   medusa_acceleration_rate (tokens per sequence-step over the last minute),
//   medusa_step_overhead_ratio (mean Medusa step time over mean plain step time at
//     the current batch size, or the nearest batch size where both were measured,
//     from decoding steps without prompt chunks, each mean over that mode's last
//     kStepWindow steps of the last kStepMaxAge; NaN until both modes have
//     kStepMinSamples there),
//   medusa_accepted_tokens_per_step (draft tokens each sequence kept per step),
//   medusa_draft_tokens_accepted_total{position},
//   medusa_step_duration_seconds{mode=plain|medusa|prefill},
//   medusa_time_to_first_token_seconds, medusa_inter_token_latency_seconds,
//   medusa_request_duration_seconds, medusa_requests_total{status},
//   medusa_requests_running, medusa_requests_waiting, medusa_kv_cache_usage_ratio,
//   medusa_kv_cache_blocks_used,
//   medusa_batch_size (sequences decoded per step), medusa_model_info{model,tree} (1; what
//     dashboards and rules join on to group pods by model).

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/scheduler/scheduler.h"

namespace prometheus {
class Counter;
class Exposer;
class Gauge;
class Histogram;
class Registry;
template <typename T> class Family;
}  // namespace prometheus

namespace medusa::server {

class Metrics {
 public:
  // Workers of the metrics endpoint, and how long one waits for a request's bytes.
  static constexpr int kMetricsThreads = 4;
  static constexpr absl::Duration kMetricsRequestTimeout = absl::Seconds(10);
  // The overhead ratio's window, per mode and batch size: the last kStepWindow decoding
  // steps no older than kStepMaxAge, and no ratio until both modes have kStepMinSamples
  // there. A mean over a handful of steps (the warm-up's, on cold caches) or over steps
  // timed long ago under other load is not the overhead of now.
  static constexpr int kStepWindow = 64;
  static constexpr int kStepMinSamples = 16;
  static constexpr absl::Duration kStepMaxAge = absl::Minutes(10);

  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves GET /metrics on `address` ("127.0.0.1:9464", "[::1]:9464"). Unavailable when the address
  // cannot be bound.
  absl::Status Serve(const std::string& address);
  // Where the live gauges come from (the scheduler); read at every scrape.
  void set_load_probe(std::function<SchedulerLoad()> probe);
  // While false (the warm-up), steps are not observed at all: no counters, no
  // histograms, and no step times for the overhead ratio (warm-up steps run on cold
  // caches and are too few to stand for a mode).
  void set_counting(bool counting);

  // The served model's name and tree (GetModelInfo's), as medusa_model_info's labels; set once the
  // server is SERVING, so a scrape that shows it finds the server answering.
  void SetModelInfo(const std::string& model, const std::string& tree);

  // One scheduler step (called on the scheduler's thread); `now` is when it ended.
  void ObserveStep(const StepReport& report, absl::Time now = absl::Now());
  // A request entered the scheduler with this many prompt tokens.
  void RequestAdmitted(int prompt_tokens);
  void FirstToken(absl::Duration since_arrival);
  // `tokens` tokens became final `gap` after the previous ones: each token's latency
  // is gap / tokens.
  void TokensAfter(absl::Duration gap, int tokens);
  // A Generate call ended with `code` after `duration`.
  void RequestFinished(absl::StatusCode code, absl::Duration duration);

  // Scrape-time values, also for tests. NaN until measured.
  double AccelerationRate(absl::Time now = absl::Now()) const;
  double StepOverheadRatio(absl::Time now = absl::Now()) const;
  // The text exposition format, as a scrape returns it.
  std::string Render() const;

 private:
  class Scrape;
  // Per-second sums for the acceleration rate's one-minute window.
  struct SecondBucket {
    int64_t second = -1;
    int64_t tokens = 0;
    int64_t steps = 0;
  };
  // The recent step times of one mode at one batch size: at most kStepWindow, oldest first.
  struct StepTimes {
    std::deque<std::pair<absl::Time, double>> steps;  // (when it ended, seconds)
    void Add(absl::Time when, double seconds);
    // Mean over the steps no older than kStepMaxAge at `now`, or NaN with fewer than
    // kStepMinSamples of them.
    double RecentMean(absl::Time now) const;
  };

  void RecordStepTime(const StepReport& report, absl::Time now);
  void Refresh() const;  // sets the gauges before a scrape
  prometheus::Counter& DraftAccepted(int position);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* generated_tokens_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* decode_steps_;
  prometheus::Gauge* acceleration_rate_;
  prometheus::Gauge* step_overhead_ratio_;
  prometheus::Gauge* requests_running_;
  prometheus::Gauge* requests_waiting_;
  prometheus::Gauge* kv_usage_ratio_;
  prometheus::Gauge* kv_blocks_used_;
  prometheus::Histogram* accepted_per_step_;
  prometheus::Histogram* batch_size_;
  prometheus::Family<prometheus::Gauge>* model_info_family_;
  prometheus::Histogram* step_duration_plain_;
  prometheus::Histogram* step_duration_medusa_;
  prometheus::Histogram* step_duration_prefill_;
  prometheus::Histogram* time_to_first_token_;
  prometheus::Histogram* inter_token_latency_;
  prometheus::Histogram* request_duration_;
  prometheus::Family<prometheus::Counter>* draft_accepted_family_;
  prometheus::Family<prometheus::Counter>* requests_family_;
  std::vector<prometheus::Counter*> draft_accepted_;  // by position - 1; scheduler thread only

  mutable std::mutex mu_;
  bool counting_ = true;
  std::function<SchedulerLoad()> load_probe_;
  std::array<SecondBucket, 60> window_;
  std::map<int, StepTimes> plain_step_;   // by batch size
  std::map<int, StepTimes> medusa_step_;  // by batch size
  int last_batch_size_ = 0;

  std::shared_ptr<Scrape> scrape_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // last: stops serving first
};

}  // namespace medusa::server
