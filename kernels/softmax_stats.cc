#include "kernels/softmax_stats.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace medusa::kernels {
namespace {

// e^x for x <= 0, in float with a relative error below 2e-7, written without calls or
// branches so that loops over it vectorize (std::exp does not, and a vocabulary row
// takes one per entry). x is clamped to -87 (NaN included), where e^x ~ 1.6e-38 is
// already negligible next to the row's maximum, which contributes e^0 = 1.
inline float ExpNonPositive(float x) {
  x = x > -87.0f ? x : -87.0f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * kLog2e + kRound;
  const float n = shifted - kRound;  // x / ln 2, rounded
  const int32_t n_int = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound);
  // r = x - n ln 2 (|r| <= 0.35), with ln 2 split in two for precision (Cody-Waite).
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // Taylor series to r^6: the r^7 term is below 1.3e-7 relative.
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  return std::bit_cast<float>(std::bit_cast<int32_t>(p) + (n_int << 23));  // p * 2^n
}

}  // namespace

float MaxLogit(absl::Span<const float> row) {
  // A ternary, not std::max: GCC vectorizes this form into vmaxps and the std::max form 8x slower.
  const float* data = row.data();
  const int n = static_cast<int>(row.size());
  float best = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : best)
  for (int i = 0; i < n; ++i) best = data[i] > best ? data[i] : best;
  return best;
}

SoftmaxStats TemperedSoftmaxStats(absl::Span<const float> row, double temperature) {
  SoftmaxStats stats;
  stats.max_logit = MaxLogit(row);
  if (!std::isfinite(stats.max_logit)) {
    stats.log_z = std::numeric_limits<double>::infinity();
    return stats;
  }
  // One pass: Z = sum e^x and sum x e^x with x = (l - max) / T <= 0; then
  // H = -sum p log p = log Z - (sum x e^x) / Z. Entries at -inf (or NaN) add nothing
  // (x is clamped, so x e^x stays finite and negligible).
  const float* data = row.data();
  const int n = static_cast<int>(row.size());
  const float max_logit = stats.max_logit;
  const float inv_t = static_cast<float>(1.0 / temperature);
  double sum_e = 0.0;
  double sum_xe = 0.0;
#pragma omp simd reduction(+ : sum_e, sum_xe)
  for (int i = 0; i < n; ++i) {
    float x = (data[i] - max_logit) * inv_t;
    x = x > -87.0f ? x : -87.0f;
    const float e = ExpNonPositive(x);
    sum_e += e;
    sum_xe += x * e;
  }
  stats.log_z = std::log(sum_e);
  stats.entropy = std::max(0.0, stats.log_z - sum_xe / sum_e);
  return stats;
}

}  // namespace medusa::kernels
