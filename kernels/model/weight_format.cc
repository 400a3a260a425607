// Dequantization must agree bit for bit with ggml's reference (and gguf-py),
// which computes Q4_1 as round(round(q * d) + m): a fused multiply-add would
// round once and differ in the last bit, so contraction is switched off for
// this file.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
// GCC 12's AVX-512 headers start conversions from _mm512_undefined_*() and then
// warn about it (GCC bug 105593): a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "kernels/model/weight_format.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace medusa {
namespace {

constexpr int kBlock = 32;

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof(v)); }

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

[[maybe_unused]] float HalfToFloatPortable(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return BitsFloat(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return BitsFloat(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24 is exact in float32.
  return BitsFloat(FloatBits(static_cast<float>(mantissa) * 5.9604644775390625e-8f) | sign);
}

// Round to nearest even, as the F16C instruction does.
[[maybe_unused]] uint16_t FloatToHalfPortable(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN, infinity
  if (abs >= 0x477ff000u) return sign | 0x7c00u;                                  // rounds past 65504
  if (abs < 0x38800000u) {
    // Subnormal or zero in half: scale so the integer part is the half
    // mantissa.
    const float scaled = BitsFloat(abs) * 16777216.0f;  // * 2^24
    return sign | static_cast<uint16_t>(std::nearbyint(scaled));
  }
  const uint32_t mantissa_odd = (abs >> 13) & 1u;
  const uint32_t rounded = abs + 0xfffu + mantissa_odd;
  return sign | static_cast<uint16_t>((rounded - (112u << 23)) >> 13);
}

void QuantizeQ8_0(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t b = 0; b < blocks; ++b, x += kBlock, out += 34) {
    float amax = 0.0f;
    for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreU16(out, FloatToHalf(d));
    for (int j = 0; j < kBlock; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
  }
}

void QuantizeQ4_0(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t b = 0; b < blocks; ++b, x += kBlock, out += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kBlock; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreU16(out, FloatToHalf(d));
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      out[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void QuantizeQ4_1(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t b = 0; b < blocks; ++b, x += kBlock, out += 20) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < kBlock; ++j) {
      min = std::min(min, x[j]);
      max = std::max(max, x[j]);
    }
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreU16(out, FloatToHalf(d));
    StoreU16(out + 2, FloatToHalf(min));
    for (int j = 0; j < kBlock / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - min) * id + 0.5f)));
      out[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void DequantQ8_0(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 34, dst += kBlock) {
    const float d = HalfToFloat(LoadU16(src));
    for (int j = 0; j < kBlock; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
  }
}

void DequantQ4_0(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 18, dst += kBlock) {
    const float d = HalfToFloat(LoadU16(src));
    for (int j = 0; j < kBlock / 2; ++j) {
      dst[j] = static_cast<float>((src[2 + j] & 0x0f) - 8) * d;
      dst[j + 16] = static_cast<float>((src[2 + j] >> 4) - 8) * d;
    }
  }
}

void DequantQ4_1(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 20, dst += kBlock) {
    const float d = HalfToFloat(LoadU16(src));
    const float m = HalfToFloat(LoadU16(src + 2));
    for (int j = 0; j < kBlock / 2; ++j) {
      dst[j] = static_cast<float>(src[4 + j] & 0x0f) * d + m;
      dst[j + 16] = static_cast<float>(src[4 + j] >> 4) * d + m;
    }
  }
}

}  // namespace

const char* WeightTypeName(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return "f32";
    case WeightType::kF16:
      return "f16";
    case WeightType::kBF16:
      return "bf16";
    case WeightType::kQ8_0:
      return "q8_0";
    case WeightType::kQ4_0:
      return "q4_0";
    case WeightType::kQ4_1:
      return "q4_1";
  }
  return "unknown";
}

const char* WeightModeName(WeightMode mode) {
  switch (mode) {
    case WeightMode::kAuto:
      return "auto";
    case WeightMode::kF32:
      return "f32";
    case WeightMode::kF16:
      return "f16";
    case WeightMode::kBF16:
      return "bf16";
    case WeightMode::kQ8_0:
      return "q8_0";
    case WeightMode::kQ4_0:
      return "q4_0";
    case WeightMode::kQ4_1:
      return "q4_1";
  }
  return "unknown";
}

absl::StatusOr<WeightMode> ParseWeightMode(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  for (WeightMode mode : {WeightMode::kAuto, WeightMode::kF32, WeightMode::kF16, WeightMode::kBF16, WeightMode::kQ8_0,
                          WeightMode::kQ4_0, WeightMode::kQ4_1}) {
    if (lower == WeightModeName(mode)) return mode;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("weights '", text, "' is not one of auto, f32, f16, bf16, q8_0, q4_0, q4_1"));
}

int BlockValues(WeightType type) {
  switch (type) {
    case WeightType::kQ8_0:
    case WeightType::kQ4_0:
    case WeightType::kQ4_1:
      return kBlock;
    default:
      return 1;
  }
}

int BlockBytes(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return 4;
    case WeightType::kF16:
    case WeightType::kBF16:
      return 2;
    case WeightType::kQ8_0:
      return 34;
    case WeightType::kQ4_0:
      return 18;
    case WeightType::kQ4_1:
      return 20;
  }
  return 0;
}

bool FitsBlocks(WeightType type, int64_t cols) { return cols > 0 && cols % BlockValues(type) == 0; }

size_t RowBytes(WeightType type, int64_t cols) {
  return static_cast<size_t>(cols / BlockValues(type)) * static_cast<size_t>(BlockBytes(type));
}

WeightType ChooseWeightType(WeightMode mode, WeightType stored, int64_t cols) {
  WeightType type = stored;
  switch (mode) {
    case WeightMode::kAuto:
      break;
    case WeightMode::kF32:
      type = WeightType::kF32;
      break;
    case WeightMode::kF16:
      type = WeightType::kF16;
      break;
    case WeightMode::kBF16:
      type = WeightType::kBF16;
      break;
    case WeightMode::kQ8_0:
      type = WeightType::kQ8_0;
      break;
    case WeightMode::kQ4_0:
      type = WeightType::kQ4_0;
      break;
    case WeightMode::kQ4_1:
      type = WeightType::kQ4_1;
      break;
  }
  return FitsBlocks(type, cols) ? type : WeightType::kF32;
}

float HalfToFloat(uint16_t bits) {
#if defined(__F16C__)
  return _cvtsh_ss(bits);
#else
  return HalfToFloatPortable(bits);
#endif
}

uint16_t FloatToHalf(float value) {
#if defined(__F16C__)
  return static_cast<uint16_t>(_cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT));
#else
  return FloatToHalfPortable(value);
#endif
}

float BFloat16ToFloat(uint16_t bits) { return BitsFloat(static_cast<uint32_t>(bits) << 16); }

uint16_t FloatToBFloat16(float value) {
  const uint32_t u = FloatBits(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64u);  // quiet NaN
  return static_cast<uint16_t>((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

void DequantizeRow(WeightType type, const uint8_t* src, int64_t n, float* dst) {
  switch (type) {
    case WeightType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case WeightType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(LoadU16(src + 2 * i));
      return;
    case WeightType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = BFloat16ToFloat(LoadU16(src + 2 * i));
      return;
    case WeightType::kQ8_0:
      return DequantQ8_0(src, n / kBlock, dst);
    case WeightType::kQ4_0:
      return DequantQ4_0(src, n / kBlock, dst);
    case WeightType::kQ4_1:
      return DequantQ4_1(src, n / kBlock, dst);
  }
}

void QuantizeRow(WeightType type, const float* src, int64_t n, uint8_t* dst) {
  switch (type) {
    case WeightType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case WeightType::kF16:
      for (int64_t i = 0; i < n; ++i) StoreU16(dst + 2 * i, FloatToHalf(src[i]));
      return;
    case WeightType::kBF16:
      for (int64_t i = 0; i < n; ++i) StoreU16(dst + 2 * i, FloatToBFloat16(src[i]));
      return;
    case WeightType::kQ8_0:
      return QuantizeQ8_0(src, n / kBlock, dst);
    case WeightType::kQ4_0:
      return QuantizeQ4_0(src, n / kBlock, dst);
    case WeightType::kQ4_1:
      return QuantizeQ4_1(src, n / kBlock, dst);
  }
}

std::vector<uint8_t> QuantizeMatrix(WeightType type, const float* values, int64_t rows, int64_t cols) {
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<uint8_t> out(row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) QuantizeRow(type, values + r * cols, cols, out.data() + r * row_bytes);
  return out;
}

std::vector<float> DequantizeMatrix(WeightType type, const uint8_t* bytes, int64_t rows, int64_t cols) {
  const size_t row_bytes = RowBytes(type, cols);
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) DequantizeRow(type, bytes + r * row_bytes, cols, out.data() + r * cols);
  return out;
}

}  // namespace medusa
