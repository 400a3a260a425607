#pragma once
// Small inline vector primitives shared by the CPU kernels.
//
// The build uses -march=native, but GCC prefers 256-bit vectors for auto-vectorized
// loops on recent Intel cores; the hot loops here use AVX-512 intrinsics directly
// (with a masked tail), and fall back to plain loops where AVX-512 is absent.

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__)
// GCC 12 flags its own AVX-512 reduction intrinsics (_mm512_undefined_* operands) as
// "used uninitialized" (GCC bug 105593); the warning is attributed to the header's lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace medusa::kernels::cpu {

#if defined(__AVX512F__)
// Mask selecting the first `n` (< 16) lanes.
inline __mmask16 TailMask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
#endif

// sum_i a[i] * b[i]
inline float Dot(const float* a, const float* b, int n) {
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps();
  __m512 acc1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
#endif
}

// y[i] += alpha * x[i]
inline void Axpy(float alpha, const float* x, float* y, int n) {
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(alpha);
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(
        y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
#else
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
#endif
}

// x[i] *= alpha
inline void Scale(float alpha, float* x, int n) {
#if defined(__AVX512F__)
  const __m512 va = _mm512_set1_ps(alpha);
  int i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(va, _mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, x + i)));
  }
#else
  for (int i = 0; i < n; ++i) x[i] *= alpha;
#endif
}

// max_i x[i]; n >= 1.
inline float Max(const float* x, int n) {
  int i = 0;
  float m = x[0];
#if defined(__AVX512F__)
  if (n >= 16) {
    __m512 vm = _mm512_loadu_ps(x);
    for (i = 16; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
    m = _mm512_reduce_max_ps(vm);
  }
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

#if defined(__AVX512F__)
// exp(x) for 16 lanes, accurate to a few ulp over the range softmax uses (x <= 0);
// underflows to 0 below about -87. Range reduction x = k ln2 + r, |r| <= ln2/2,
// then a degree-7 polynomial (Cephes' expf coefficients) for exp(r) and a scale by 2^k.
inline __m512 Exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  const __m512 hi = _mm512_set1_ps(88.3f);
  x = _mm512_max_ps(_mm512_min_ps(x, hi), lo);
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - k ln2, with ln2 split in two for precision.
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, k);
}
#endif

// x[i] = exp(x[i] - shift); returns the sum of the new values.
inline float ExpShiftedSum(float* x, int n, float shift) {
  float sum = 0.0f;
  int i = 0;
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    _mm512_mask_storeu_ps(x + i, m, e);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, e));
    i = n;
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace medusa::kernels::cpu
