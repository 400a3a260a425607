#pragma once
// A row of logits' tempered softmax, summarized: its largest logit, the log of its
// normalizer and its entropy, so that p(x) = exp((logit_x - max) / T - log_z). Typical
// acceptance needs these for each verified row, and a backend computes them where the logits
// are (a GPU on the device), so a sampling step copies back a few numbers per row, not the row.

#include <cstdint>

#include "absl/types/span.h"

namespace medusa::kernels {

struct SoftmaxStats {
  float max_logit = 0;  // NaN skipped; -inf when there is no number
  double log_z = 0;     // log sum exp((l - max) / T); +inf when max_logit is not finite
  double entropy = 0;   // -sum p log p (0 when max_logit is not finite)
};

// The largest value of `row`, NaN skipped (-inf for none). Vectorized.
float MaxLogit(absl::Span<const float> row);

// The stats of `row` at `temperature` (> 0). Sums in double over float exponentials with a
// relative error below 2e-7; entries at -inf or NaN add nothing.
SoftmaxStats TemperedSoftmaxStats(absl::Span<const float> row, double temperature);

}  // namespace medusa::kernels
