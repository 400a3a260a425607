#include "engine/train/adamw.h"

#include <algorithm>
#include <cmath>

namespace medusa::train_internal {
namespace {

constexpr size_t kChunk = size_t{1} << 16;

}  // namespace

void AdamW::SetParams(std::vector<ParamTensor> params) {
  params_ = std::move(params);
  chunks_.clear();
  for (int p = 0; p < static_cast<int>(params_.size()); ++p) {
    for (size_t b = 0; b < params_[p].size; b += kChunk) {
      chunks_.push_back({p, b, std::min(params_[p].size, b + kChunk)});
    }
  }
  chunk_sums_.assign(chunks_.size(), 0.0);
}

double AdamW::GradientNorm(math::ThreadPool& pool) {
  pool.ParallelFor(pool.size(), static_cast<int>(chunks_.size()), [&](int c, int) {
    const Chunk& chunk = chunks_[c];
    const float* g = params_[chunk.param].grad;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (size_t j = chunk.begin; j < chunk.end; ++j) sum += static_cast<double>(g[j]) * g[j];
    chunk_sums_[c] = sum;
  });
  double total = 0.0;
  for (double s : chunk_sums_) total += s;
  return std::sqrt(total);
}

void AdamW::Update(const TrainerOptions& options, double lr, int64_t step, math::ThreadPool& pool) {
  const double norm = GradientNorm(pool);
  const float clip = options.grad_clip > 0.0f && norm > options.grad_clip
                         ? static_cast<float>(options.grad_clip / (norm + 1e-6))
                         : 1.0f;
  const double t = static_cast<double>(step + 1);
  const double bias1 = 1.0 - std::pow(static_cast<double>(options.adam_beta1), t);
  const double bias2 = 1.0 - std::pow(static_cast<double>(options.adam_beta2), t);
  const float step_size = static_cast<float>(lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float b1 = options.adam_beta1, b2 = options.adam_beta2, eps = options.adam_eps;
  const float decay = static_cast<float>(1.0 - lr * options.weight_decay);
  pool.ParallelFor(pool.size(), static_cast<int>(chunks_.size()), [&](int c, int) {
    const Chunk& chunk = chunks_[c];
    const ParamTensor& p = params_[chunk.param];
    const float keep = p.decay ? decay : 1.0f;
    for (size_t j = chunk.begin; j < chunk.end; ++j) {
      const float g = p.grad[j] * clip;
      const float m = b1 * p.exp_avg[j] + (1.0f - b1) * g;
      const float v = b2 * p.exp_avg_sq[j] + (1.0f - b2) * g * g;
      p.exp_avg[j] = m;
      p.exp_avg_sq[j] = v;
      p.value[j] = p.value[j] * keep - step_size * m / (std::sqrt(v) * inv_sqrt_bias2 + eps);
    }
  });
}

}  // namespace medusa::train_internal
