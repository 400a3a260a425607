// Dequantization must agree bit for bit with ggml's reference (and gguf-py), which
// computes Q4_1 as round(round(q * d) + m): a fused multiply-add would round once and
// differ in the last bit, so contraction is switched off for this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
// GCC 12's AVX-512 headers start conversions from _mm512_undefined_*() and then warn
// about it (GCC bug 105593): a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "engine/model/dequant.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

namespace medusa::gguf {
namespace {

// ggml's type ids (ggml.h `enum ggml_type`), with block sizes and bytes per block.
// Ids that ggml retired (4, 5, 31-33, 36-38) are absent on purpose.
struct TypeEntry {
  uint32_t id;
  GgmlTypeTraits traits;
};
// clang-format off
constexpr TypeEntry kTypes[] = {
    {0, {"F32", 1, 4}},         {1, {"F16", 1, 2}},         {2, {"Q4_0", 32, 18}},
    {3, {"Q4_1", 32, 20}},      {6, {"Q5_0", 32, 22}},      {7, {"Q5_1", 32, 24}},
    {8, {"Q8_0", 32, 34}},      {10, {"Q2_K", 256, 84}},    {11, {"Q3_K", 256, 110}},
    {12, {"Q4_K", 256, 144}},   {13, {"Q5_K", 256, 176}},   {14, {"Q6_K", 256, 210}},
    {15, {"Q8_K", 256, 292}},   {16, {"IQ2_XXS", 256, 66}}, {17, {"IQ2_XS", 256, 74}},
    {18, {"IQ3_XXS", 256, 98}}, {19, {"IQ1_S", 256, 50}},   {20, {"IQ4_NL", 32, 18}},
    {21, {"IQ3_S", 256, 110}},  {22, {"IQ2_S", 256, 82}},   {23, {"IQ4_XS", 256, 136}},
    {24, {"I8", 1, 1}},         {25, {"I16", 1, 2}},        {26, {"I32", 1, 4}},
    {27, {"I64", 1, 8}},        {28, {"F64", 1, 8}},        {29, {"IQ1_M", 256, 56}},
    {30, {"BF16", 1, 2}},       {34, {"TQ1_0", 256, 54}},   {35, {"TQ2_0", 256, 66}},
    {39, {"MXFP4", 32, 17}},
};
// clang-format on

constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30;
constexpr int kQBlock = 32;  // elements per Q8_0 / Q4_0 / Q4_1 block

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

[[maybe_unused]] float HalfToFloatPortable(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity, NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  } else {
    // Zero or subnormal: mantissa * 2^-24 is exact in float32.
    float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &magnitude, sizeof(bits));
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

void DequantF32(const uint8_t* src, int64_t n, float* dst) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void DequantF16(const uint8_t* src, int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
    _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
  }
#elif defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) dst[i] = HalfToFloat(LoadU16(src + 2 * i));
}

void DequantBF16(const uint8_t* src, int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
    __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(w));
  }
#endif
  for (; i < n; ++i) dst[i] = BFloat16ToFloat(LoadU16(src + 2 * i));
}

// Q8_0 block: f16 scale d, then 32 int8 q; value = q * d.
void DequantQ8_0(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 34, dst += kQBlock) {
    const float d = HalfToFloat(LoadU16(src));
    const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
#if defined(__AVX512F__)
    const __m512 vd = _mm512_set1_ps(d);
    for (int half = 0; half < 2; ++half) {
      __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * half));
      __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
      _mm512_storeu_ps(dst + 16 * half, _mm512_mul_ps(v, vd));
    }
#else
    for (int j = 0; j < kQBlock; ++j) dst[j] = static_cast<float>(q[j]) * d;
#endif
  }
}

// Q4_0 block: f16 d, then 16 bytes; the low nibbles are elements 0..15, the high
// nibbles 16..31; value = (nibble - 8) * d.
void DequantQ4_0(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 18, dst += kQBlock) {
    const float d = HalfToFloat(LoadU16(src));
    const uint8_t* qs = src + 2;
#if defined(__AVX512F__)
    const __m512 vd = _mm512_set1_ps(d);
    const __m512i eight = _mm512_set1_epi32(8);
    __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    __m512i lo = _mm512_sub_epi32(_mm512_and_si512(bytes, _mm512_set1_epi32(0xf)), eight);
    __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(bytes, 4), eight);
    _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), vd));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), vd));
#else
    for (int j = 0; j < kQBlock / 2; ++j) {
      dst[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
      dst[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
#endif
  }
}

// Q4_1 block: f16 d, f16 m, then 16 bytes laid out as in Q4_0; value = nibble * d + m.
void DequantQ4_1(const uint8_t* src, int64_t n_blocks, float* dst) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 20, dst += kQBlock) {
    const float d = HalfToFloat(LoadU16(src));
    const float m = HalfToFloat(LoadU16(src + 2));
    const uint8_t* qs = src + 4;
#if defined(__AVX512F__)
    const __m512 vd = _mm512_set1_ps(d);
    const __m512 vm = _mm512_set1_ps(m);
    __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(0xf)));
    __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_mul_ps(lo, vd), vm));
    _mm512_storeu_ps(dst + 16, _mm512_add_ps(_mm512_mul_ps(hi, vd), vm));
#else
    for (int j = 0; j < kQBlock / 2; ++j) {
      dst[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
      dst[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
    }
#endif
  }
}

// Converts whole blocks [first_block, first_block + n_blocks).
void DequantBlocks(uint32_t type, const GgmlTypeTraits& t, const uint8_t* src, int64_t first_block,
                   int64_t n_blocks, float* dst) {
  const uint8_t* in = src + first_block * t.type_size;
  float* out = dst + first_block * t.block_size;
  switch (type) {
    case kF32:
      return DequantF32(in, n_blocks, out);
    case kF16:
      return DequantF16(in, n_blocks, out);
    case kBF16:
      return DequantBF16(in, n_blocks, out);
    case kQ8_0:
      return DequantQ8_0(in, n_blocks, out);
    case kQ4_0:
      return DequantQ4_0(in, n_blocks, out);
    case kQ4_1:
      return DequantQ4_1(in, n_blocks, out);
  }
}

}  // namespace

const GgmlTypeTraits* FindGgmlType(uint32_t type) {
  for (const TypeEntry& e : kTypes) {
    if (e.id == type) return &e.traits;
  }
  return nullptr;
}

std::string GgmlTypeName(uint32_t type) {
  const GgmlTypeTraits* t = FindGgmlType(type);
  return absl::StrCat(t != nullptr ? t->name : "unknown", " (", type, ")");
}

bool CanDequantize(uint32_t type) {
  return type == kF32 || type == kF16 || type == kBF16 || type == kQ8_0 || type == kQ4_0 ||
         type == kQ4_1;
}

float HalfToFloat(uint16_t bits) {
#if defined(__F16C__)
  return _cvtsh_ss(bits);
#else
  return HalfToFloatPortable(bits);
#endif
}

float BFloat16ToFloat(uint16_t bits) {
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &widened, sizeof(out));
  return out;
}

void Dequantize(uint32_t type, const uint8_t* src, int64_t count, float* dst) {
  const GgmlTypeTraits* t = FindGgmlType(type);
  if (t == nullptr || !CanDequantize(type) || count <= 0) return;
  const int64_t n_blocks = count / t->block_size;
  // Chunks of ~64K elements spread a big tensor over every core. Small tensors stay
  // on one thread: the work is memory-bound, and on a busy machine every parallel
  // region can cost a scheduler time slice waiting for a preempted thread (measured:
  // 272 SmolLM2 tensors took 1.7 s in per-tensor regions on 2 loaded cores, 0.28 s serial).
  constexpr int64_t kMinParallelElements = int64_t{1} << 22;
  const int64_t blocks_per_chunk = std::max<int64_t>(1, (int64_t{1} << 16) / t->block_size);
  const int64_t n_chunks = (n_blocks + blocks_per_chunk - 1) / blocks_per_chunk;
#pragma omp parallel for schedule(static) if (count >= kMinParallelElements)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t first = c * blocks_per_chunk;
    const int64_t n = std::min(blocks_per_chunk, n_blocks - first);
    DequantBlocks(type, *t, src, first, n, dst);
  }
}

}  // namespace medusa::gguf
