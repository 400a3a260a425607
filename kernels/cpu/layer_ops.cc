#include "kernels/cpu/layer_ops.h"

#include <cmath>
#include <cstddef>

#include "kernels/math/vector_ops.h"

namespace medusa::kernels::cpu {
namespace {

// Elements per thread below which a fork/join costs more than it saves.
constexpr long long kMinElementsPerThread = 1 << 14;

void RmsNormRow(const float* x, const float* weight, int dim, float eps, float* out) {
  using namespace math::simd;
  const float mean_square = math::Dot(x, x, dim) / static_cast<float>(dim);
  const float inv = 1.0f / std::sqrt(mean_square + eps);
  const Vec vinv = Set1(inv);
  int i = 0;
  for (; i + kLanes <= dim; i += kLanes) Store(out + i, Mul(Mul(Load(x + i), vinv), Load(weight + i)));
  if (i < dim) MaskedStore(out + i, dim - i, Mul(Mul(MaskedLoad(x + i, dim - i), vinv), MaskedLoad(weight + i, dim - i)));
}

void SwiGluRow(const float* gate, const float* up, int n, float* out) {
  using namespace math::simd;
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) Store(out + i, Mul(Silu(Load(gate + i)), Load(up + i)));
  if (i < n) MaskedStore(out + i, n - i, Mul(Silu(MaskedLoad(gate + i, n - i)), MaskedLoad(up + i, n - i)));
}

}  // namespace

void RmsNorm(const float* x, int x_stride, const float* weight, int rows, int dim, float eps,
             float* out, int out_stride, math::ThreadPool* pool) {
  pool->ForRanges(rows, static_cast<long long>(rows) * dim, kMinElementsPerThread, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) {
      RmsNormRow(x + static_cast<size_t>(r) * x_stride, weight, dim, eps, out + static_cast<size_t>(r) * out_stride);
    }
  });
}

void RopeAngles(int position, const double* frequencies, int half, float* cos_out, float* sin_out) {
  for (int i = 0; i < half; ++i) {
    const double angle = position * frequencies[i];
    cos_out[i] = static_cast<float>(std::cos(angle));
    sin_out[i] = static_cast<float>(std::sin(angle));
  }
}

void ApplyRope(float* x, int n_heads, int head_dim, const float* cos_table, const float* sin_table) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float a = v[2 * i];
      const float b = v[2 * i + 1];
      v[2 * i] = a * cos_table[i] - b * sin_table[i];
      v[2 * i + 1] = a * sin_table[i] + b * cos_table[i];
    }
  }
}

void SwiGlu(const float* gate_up, int rows, int hidden, float* out, math::ThreadPool* pool) {
  pool->ForRanges(rows, static_cast<long long>(rows) * hidden, kMinElementsPerThread, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) {
      const float* row = gate_up + static_cast<size_t>(r) * 2 * hidden;
      SwiGluRow(row, row + hidden, hidden, out + static_cast<size_t>(r) * hidden);
    }
  });
}

}  // namespace medusa::kernels::cpu
