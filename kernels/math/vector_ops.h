#pragma once
// Small inline vector primitives shared by the CPU kernels, on simd.h's vector (AVX-512,
// AVX2 or portable). Each result depends only on its inputs and their length, never on
// the batch around them.

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/math/simd.h"

namespace medusa::math {

// sum_i a[i] * b[i]
inline float Dot(const float* a, const float* b, int n) {
  using namespace simd;
  Vec acc0 = Zero();
  Vec acc1 = Zero();
  int i = 0;
  for (; i + 2 * kLanes <= n; i += 2 * kLanes) {
    acc0 = Fma(Load(a + i), Load(b + i), acc0);
    acc1 = Fma(Load(a + i + kLanes), Load(b + i + kLanes), acc1);
  }
  for (; i + kLanes <= n; i += kLanes) acc0 = Fma(Load(a + i), Load(b + i), acc0);
  if (i < n) acc1 = Fma(MaskedLoad(a + i, n - i), MaskedLoad(b + i, n - i), acc1);
  return ReduceAdd(Add(acc0, acc1));
}

// y[i] += alpha * x[i]
inline void Axpy(float alpha, const float* x, float* y, int n) {
  using namespace simd;
  const Vec va = Set1(alpha);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) Store(y + i, Fma(va, Load(x + i), Load(y + i)));
  if (i < n) MaskedStore(y + i, n - i, Fma(va, MaskedLoad(x + i, n - i), MaskedLoad(y + i, n - i)));
}

// x[i] *= alpha
inline void Scale(float alpha, float* x, int n) {
  using namespace simd;
  const Vec va = Set1(alpha);
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) Store(x + i, Mul(va, Load(x + i)));
  if (i < n) MaskedStore(x + i, n - i, Mul(va, MaskedLoad(x + i, n - i)));
}

// max_i x[i]; n >= 1.
inline float Max(const float* x, int n) {
  using namespace simd;
  int i = 0;
  float m = x[0];
  if (n >= kLanes) {
    Vec vm = Load(x);
    for (i = kLanes; i + kLanes <= n; i += kLanes) vm = simd::Max(vm, Load(x + i));
    m = ReduceMax(vm);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// x[i] = exp(x[i] - shift); returns the sum of the new values.
inline float ExpShiftedSum(float* x, int n, float shift) {
  using namespace simd;
  const Vec vs = Set1(shift);
  Vec acc = Zero();
  int i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const Vec e = Exp(Sub(Load(x + i), vs));
    Store(x + i, e);
    acc = Add(acc, e);
  }
  if (i < n) {
    // Lanes past the end load 0 and give exp(-shift): keep them out of the sum.
    const Vec e = Exp(Sub(MaskedLoad(x + i, n - i), vs));
    MaskedStore(x + i, n - i, e);
    alignas(64) float tail[kLanes] = {};
    MaskedStore(tail, n - i, e);
    acc = Add(acc, Load(tail));
  }
  return ReduceAdd(acc);
}

}  // namespace medusa::math
