#include "kernels/model/rope.h"

#include <cmath>

namespace medusa {

std::vector<double> RopeFrequencies(const ModelConfig& config) {
  const int half = config.head_dim / 2;
  std::vector<double> f(half);
  for (int i = 0; i < half; ++i) {
    f[i] = std::pow(static_cast<double>(config.rope_theta), -2.0 * i / config.head_dim);
  }
  return f;
}

}  // namespace medusa
