// medusa_step_overhead_ratio from synthetic step reports: NaN until both modes have
// enough recent decoding steps at one batch size, a window that forgets old steps (by
// count and by age), the warm-up ignored, and the ratio of the two recent means.

#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/metrics.h"

namespace medusa::server {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

StepReport Step(bool medusa, int batch, double seconds, int prefill_tokens = 0) {
  StepReport report;
  report.batch_size = batch;
  report.medusa = medusa;
  report.tree_nodes = medusa ? 8 : 1;
  report.seconds = seconds;
  report.tokens = batch;
  report.accepted.assign(batch, 0);
  report.prefill_tokens = prefill_tokens;
  return report;
}

// `count` steps of one mode, one per 10 ms from `at`.
void Feed(Metrics& metrics, bool medusa, int batch, double seconds, int count, absl::Time at) {
  for (int i = 0; i < count; ++i) metrics.ObserveStep(Step(medusa, batch, seconds), at + absl::Milliseconds(10 * i));
}

TEST(MetricsOverheadTest, NaNUntilBothModesHaveTheMinimumOfSteps) {
  Metrics metrics;
  EXPECT_TRUE(std::isnan(metrics.StepOverheadRatio(kStart)));
  Feed(metrics, /*medusa=*/false, 1, 0.010, Metrics::kStepMinSamples, kStart);
  Feed(metrics, /*medusa=*/true, 1, 0.012, Metrics::kStepMinSamples - 1, kStart);
  EXPECT_TRUE(std::isnan(metrics.StepOverheadRatio(kStart + absl::Seconds(1))));
  Feed(metrics, /*medusa=*/true, 1, 0.012, 1, kStart + absl::Seconds(1));
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + absl::Seconds(2)), 1.2, 1e-9);
}

TEST(MetricsOverheadTest, ModesAtDifferentBatchSizesGiveNoRatio) {
  Metrics metrics;
  Feed(metrics, /*medusa=*/false, 2, 0.010, 40, kStart);
  Feed(metrics, /*medusa=*/true, 1, 0.012, 40, kStart);
  EXPECT_TRUE(std::isnan(metrics.StepOverheadRatio(kStart + absl::Seconds(1))));
}

TEST(MetricsOverheadTest, StepsWithPromptChunksAreNotTimed) {
  Metrics metrics;
  Feed(metrics, /*medusa=*/false, 1, 0.010, 40, kStart);
  for (int i = 0; i < 40; ++i) metrics.ObserveStep(Step(/*medusa=*/true, 1, 0.050, /*prefill_tokens=*/64), kStart);
  EXPECT_TRUE(std::isnan(metrics.StepOverheadRatio(kStart + absl::Seconds(1))));
}

TEST(MetricsOverheadTest, WarmUpStepsAreIgnored) {
  Metrics metrics;
  metrics.set_counting(false);
  Feed(metrics, /*medusa=*/false, 1, 0.100, 40, kStart);  // slow cold steps
  metrics.set_counting(true);
  Feed(metrics, /*medusa=*/true, 1, 0.012, 40, kStart + absl::Seconds(1));
  EXPECT_TRUE(std::isnan(metrics.StepOverheadRatio(kStart + absl::Seconds(2))));
  Feed(metrics, /*medusa=*/false, 1, 0.010, 40, kStart + absl::Seconds(2));
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + absl::Seconds(3)), 1.2, 1e-9);
}

TEST(MetricsOverheadTest, WindowKeepsOnlyTheLastSteps) {
  Metrics metrics;
  // Fast plain steps first (what the warm-up used to leave), then a full window of slower
  // ones: only the recent ones count.
  Feed(metrics, /*medusa=*/false, 1, 0.005, 100, kStart);
  Feed(metrics, /*medusa=*/false, 1, 0.010, Metrics::kStepWindow, kStart + absl::Seconds(2));
  Feed(metrics, /*medusa=*/true, 1, 0.015, Metrics::kStepWindow, kStart + absl::Seconds(2));
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + absl::Seconds(5)), 1.5, 1e-9);
  // Half a window of faster Medusa steps: the mean mixes the two halves.
  Feed(metrics, /*medusa=*/true, 1, 0.005, Metrics::kStepWindow / 2, kStart + absl::Seconds(5));
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + absl::Seconds(6)), 1.0, 1e-9);
}

TEST(MetricsOverheadTest, OldStepsAgeOut) {
  Metrics metrics;
  Feed(metrics, /*medusa=*/false, 1, 0.010, 40, kStart);
  Feed(metrics, /*medusa=*/true, 1, 0.013, 40, kStart + Metrics::kStepMaxAge / 2);
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + Metrics::kStepMaxAge / 2 + absl::Seconds(1)), 1.3, 1e-9);
  // Past the age limit of the plain steps (Medusa ones still recent): no ratio.
  EXPECT_TRUE(std::isnan(metrics.StepOverheadRatio(kStart + Metrics::kStepMaxAge + absl::Seconds(5))));
  // Fresh plain steps bring it back, measured against them.
  Feed(metrics, /*medusa=*/false, 1, 0.0065, 40, kStart + Metrics::kStepMaxAge + absl::Seconds(5));
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + Metrics::kStepMaxAge + absl::Seconds(6)), 2.0, 1e-9);
}

TEST(MetricsOverheadTest, NearestMeasuredBatchSizeToTheCurrentOne) {
  Metrics metrics;
  Feed(metrics, /*medusa=*/false, 1, 0.010, 40, kStart);
  Feed(metrics, /*medusa=*/true, 1, 0.012, 40, kStart);
  Feed(metrics, /*medusa=*/false, 4, 0.020, 40, kStart);
  Feed(metrics, /*medusa=*/true, 4, 0.030, 40, kStart);
  // The last step was at batch 4.
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + absl::Seconds(1)), 1.5, 1e-9);
  // After a step at batch 1, batch 1's ratio.
  metrics.ObserveStep(Step(/*medusa=*/true, 1, 0.012), kStart + absl::Seconds(1));
  EXPECT_NEAR(metrics.StepOverheadRatio(kStart + absl::Seconds(2)), 1.2, 1e-9);
}

TEST(MetricsOverheadTest, ExportedGaugeFollows) {
  Metrics metrics;
  const absl::Time now = absl::Now();
  Feed(metrics, /*medusa=*/false, 1, 0.010, 20, now - absl::Seconds(5));
  Feed(metrics, /*medusa=*/true, 1, 0.011, 20, now - absl::Seconds(5));
  const std::string text = metrics.Render();
  const std::string series = "\nmedusa_step_overhead_ratio ";
  const size_t at = text.find(series);
  ASSERT_NE(at, std::string::npos) << text;
  EXPECT_NEAR(std::strtod(text.c_str() + at + series.size(), nullptr), 1.1, 1e-9) << text;
  EXPECT_NE(text.find("# HELP medusa_step_overhead_ratio Mean Medusa step time"), std::string::npos) << text;
}

TEST(MetricsOverheadTest, BatchSizeAndModelInfoAreExported) {
  Metrics metrics;
  metrics.SetModelInfo("SmolLM2", "auto");
  metrics.ObserveStep(Step(/*medusa=*/true, 3, 0.01));
  metrics.ObserveStep(Step(/*medusa=*/false, 5, 0.01));
  StepReport prefill_only = Step(/*medusa=*/false, 0, 0.01, /*prefill_tokens=*/32);
  metrics.ObserveStep(prefill_only);
  const std::string text = metrics.Render();
  EXPECT_NE(text.find("medusa_model_info{model=\"SmolLM2\",tree=\"auto\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("medusa_batch_size_count 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("medusa_batch_size_sum 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("medusa_batch_size_bucket{le=\"4\"} 1\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace medusa::server
