#pragma once
// One float vector for the CPU kernels, so each kernel is written once: 16 lanes with
// AVX-512, 8 with AVX2 + FMA, and 8 plain floats elsewhere (loops the compiler may
// vectorize). Every multiply-add is a fused one on all three, and no kernel's order of
// operations depends on how many rows a batch has: that is what keeps Medusa's verified
// K/V bit-identical to plain decoding, whatever the instruction set.
//
// Tails: MaskedLoad reads the first n lanes (the rest are 0) and MaskedStore writes only
// them, so rows of any length are handled without reading or writing past their end.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// GCC 12 flags its own AVX-512 reduction intrinsics (_mm512_undefined_* operands) as
// "used uninitialized" (GCC bug 105593); the warning is attributed to the header's lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace medusa::math::simd {

#if defined(__AVX512F__)

constexpr int kLanes = 16;
constexpr const char* kName = "avx512";
using Vec = __m512;

inline __mmask16 Mask(int n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }
inline Vec Zero() { return _mm512_setzero_ps(); }
inline Vec Set1(float x) { return _mm512_set1_ps(x); }
inline Vec Load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec LoadAligned(const float* p) { return _mm512_load_ps(p); }
inline void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec MaskedLoad(const float* p, int n) { return _mm512_maskz_loadu_ps(Mask(n), p); }
inline void MaskedStore(float* p, int n, Vec v) { _mm512_mask_storeu_ps(p, Mask(n), v); }
inline Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec Div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
inline Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec Min(Vec a, Vec b) { return _mm512_min_ps(a, b); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }    // a * b + c
inline Vec Fnma(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a * b
inline Vec Round(Vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// x * 2^k for integral k in [-126, 127].
inline Vec Scale2(Vec x, Vec k) { return _mm512_scalef_ps(x, k); }
inline float ReduceAdd(Vec v) { return _mm512_reduce_add_ps(v); }
// kLanes 16-bit floats (bfloat16 or IEEE half) widened exactly to float32.
inline Vec LoadBF16(const uint16_t* p) {
  const __m256i h = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline Vec LoadF16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
}
inline float ReduceMax(Vec v) { return _mm512_reduce_max_ps(v); }

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kLanes = 8;
constexpr const char* kName = "avx2";
using Vec = __m256;

// The first n lanes set (n in [0, 8]).
inline __m256i Mask(int n) {
  alignas(32) static constexpr int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + 8 - std::clamp(n, 0, 8)));
}
inline Vec Zero() { return _mm256_setzero_ps(); }
inline Vec Set1(float x) { return _mm256_set1_ps(x); }
inline Vec Load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec LoadAligned(const float* p) { return _mm256_load_ps(p); }
inline void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec MaskedLoad(const float* p, int n) { return _mm256_maskload_ps(p, Mask(n)); }
inline void MaskedStore(float* p, int n, Vec v) { _mm256_maskstore_ps(p, Mask(n), v); }
inline Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec Div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
inline Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec Min(Vec a, Vec b) { return _mm256_min_ps(a, b); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec Fnma(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
inline Vec Round(Vec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec LoadBF16(const uint16_t* p) {
  const __m128i h = _mm_load_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline Vec LoadF16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec Scale2(Vec x, Vec k) {
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(x, _mm256_castsi256_ps(bits));
}
inline float ReduceAdd(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float ReduceMax(Vec v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#else  // Portable: 8 floats, fused multiply-adds through std::fma.

constexpr int kLanes = 8;
constexpr const char* kName = "portable";
struct Vec {
  float v[kLanes];
};

template <typename F>
inline Vec Map(F f) {
  Vec r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = f(i);
  return r;
}
inline Vec Zero() { return Map([](int) { return 0.0f; }); }
inline Vec Set1(float x) { return Map([x](int) { return x; }); }
inline Vec Load(const float* p) { return Map([p](int i) { return p[i]; }); }
inline Vec LoadAligned(const float* p) { return Load(p); }
inline void Store(float* p, Vec v) { std::memcpy(p, v.v, sizeof(v.v)); }
inline Vec MaskedLoad(const float* p, int n) { return Map([p, n](int i) { return i < n ? p[i] : 0.0f; }); }
inline void MaskedStore(float* p, int n, Vec v) { std::memcpy(p, v.v, sizeof(float) * std::clamp(n, 0, kLanes)); }
inline Vec Add(Vec a, Vec b) { return Map([&](int i) { return a.v[i] + b.v[i]; }); }
inline Vec Sub(Vec a, Vec b) { return Map([&](int i) { return a.v[i] - b.v[i]; }); }
inline Vec Mul(Vec a, Vec b) { return Map([&](int i) { return a.v[i] * b.v[i]; }); }
inline Vec Div(Vec a, Vec b) { return Map([&](int i) { return a.v[i] / b.v[i]; }); }
inline Vec Max(Vec a, Vec b) { return Map([&](int i) { return std::max(a.v[i], b.v[i]); }); }
inline Vec Min(Vec a, Vec b) { return Map([&](int i) { return std::min(a.v[i], b.v[i]); }); }
inline Vec Fma(Vec a, Vec b, Vec c) { return Map([&](int i) { return std::fma(a.v[i], b.v[i], c.v[i]); }); }
inline Vec Fnma(Vec a, Vec b, Vec c) { return Map([&](int i) { return std::fma(-a.v[i], b.v[i], c.v[i]); }); }
inline Vec Round(Vec x) { return Map([&](int i) { return std::nearbyint(x.v[i]); }); }
inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline Vec LoadBF16(const uint16_t* p) {
  return Map([p](int i) { return BitsToFloat(static_cast<uint32_t>(p[i]) << 16); });
}
inline Vec LoadF16(const uint16_t* p) {
  return Map([p](int i) {
    const uint32_t h = p[i], sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return BitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // subnormal: exact
    return sign != 0 ? -magnitude : magnitude;
  });
}
inline Vec Scale2(Vec x, Vec k) { return Map([&](int i) { return std::ldexp(x.v[i], static_cast<int>(k.v[i])); }); }
inline float ReduceAdd(Vec v) {
  float s = 0.0f;
  for (float x : v.v) s += x;
  return s;
}
inline float ReduceMax(Vec v) { return *std::max_element(v.v, v.v + kLanes); }

#endif

// exp(x) per lane, accurate to a few ulp; 0 below about -87, clamped at 88.3. Range
// reduction x = k ln2 + r, |r| <= ln2/2, then a degree-7 polynomial (Cephes' expf
// coefficients) for exp(r) and a scale by 2^k.
inline Vec Exp(Vec x) {
  x = Max(Min(x, Set1(88.3f)), Set1(-87.3f));
  const Vec k = Round(Mul(x, Set1(1.44269504088896341f)));
  // r = x - k ln2, with ln2 split in two for precision.
  Vec r = Fnma(k, Set1(0.693359375f), x);
  r = Fnma(k, Set1(-2.12194440e-4f), r);
  Vec p = Set1(1.9875691500e-4f);
  p = Fma(p, r, Set1(1.3981999507e-3f));
  p = Fma(p, r, Set1(8.3334519073e-3f));
  p = Fma(p, r, Set1(4.1665795894e-2f));
  p = Fma(p, r, Set1(1.6666665459e-1f));
  p = Fma(p, r, Set1(5.0000001201e-1f));
  p = Fma(p, Mul(r, r), Add(r, Set1(1.0f)));
  return Scale2(p, k);
}

// x / (1 + exp(-x)) per lane.
inline Vec Silu(Vec x) { return Div(x, Add(Set1(1.0f), Exp(Sub(Zero(), x)))); }

}  // namespace medusa::math::simd
