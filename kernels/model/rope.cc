#include "kernels/model/rope.h"

#include <cmath>

namespace medusa {

std::vector<double> RopeFrequencies(const ModelConfig& config) {
  const int half = config.head_dim / 2;
  std::vector<double> f(half);
  for (int i = 0; i < half; ++i) {
    f[i] = std::pow(static_cast<double>(config.rope_theta), -2.0 * i / config.head_dim);
  }
  const ModelConfig::RopeScaling& s = config.rope_scaling;
  if (s.factor > 0.0f) {
    // Llama 3's rule, as transformers' _compute_llama3_parameters applies it.
    const double low_wavelength = s.original_context / static_cast<double>(s.low_freq_factor);
    const double high_wavelength = s.original_context / static_cast<double>(s.high_freq_factor);
    for (double& freq : f) {
      const double wavelength = 2.0 * M_PI / freq;
      if (wavelength > low_wavelength) {
        freq /= s.factor;
      } else if (wavelength >= high_wavelength) {
        const double smooth =
            (s.original_context / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        freq = (1.0 - smooth) * freq / s.factor + smooth * freq;
      }
    }
  }
  return f;
}

}  // namespace medusa
