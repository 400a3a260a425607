#include "kernels/cuda/half_precision.h"

#include <bit>
#include <cstring>

namespace medusa::kernels::cuda {

uint16_t FloatToHalf(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // inf or NaN; a NaN keeps a payload bit so it stays NaN
    return static_cast<uint16_t>(sign | 0x7C00u |
                                 (magnitude > 0x7F800000u ? 0x0200u | ((magnitude >> 13) & 0x3FFu) : 0));
  }
  if (magnitude >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504
  if (magnitude < 0x38800000u) {
    // Below the smallest normal (2^-14): a subnormal, a multiple of 2^-24, rounded to even.
    if (magnitude < 0x33000000u) return static_cast<uint16_t>(sign);  // below half of 2^-24
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // 14 + (127 - exponent) - 15 ... aligns to 2^-24 units
    const uint32_t half = 1u << (shift - 1);
    uint32_t result = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1);
    if (rest > half || (rest == half && (result & 1u))) ++result;
    return static_cast<uint16_t>(sign | result);
  }
  // Normal: rebias the exponent (127 -> 15) and round the mantissa from 23 to 10 bits.
  uint32_t result = ((magnitude >> 13) - (112u << 10));
  const uint32_t rest = magnitude & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (result & 1u))) ++result;  // may carry into the exponent: right
  return static_cast<uint16_t>(sign | result);
}

float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  uint32_t mantissa = half & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal: normalize.
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    bits = sign | ((112 - e) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t FloatToBfloat16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Bfloat16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

void ConvertFloats(absl::Span<const float> values, WeightType type, void* out) {
  switch (type) {
    case WeightType::kFloat32:
      std::memcpy(out, values.data(), values.size() * sizeof(float));
      return;
    case WeightType::kFloat16: {
      auto* dst = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < values.size(); ++i) dst[i] = FloatToHalf(values[i]);
      return;
    }
    case WeightType::kBfloat16: {
      auto* dst = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < values.size(); ++i) dst[i] = FloatToBfloat16(values[i]);
      return;
    }
  }
}

void ConvertToFloats(const void* in, WeightType type, absl::Span<float> out) {
  switch (type) {
    case WeightType::kFloat32:
      std::memcpy(out.data(), in, out.size() * sizeof(float));
      return;
    case WeightType::kFloat16: {
      const auto* src = static_cast<const uint16_t*>(in);
      for (size_t i = 0; i < out.size(); ++i) out[i] = HalfToFloat(src[i]);
      return;
    }
    case WeightType::kBfloat16: {
      const auto* src = static_cast<const uint16_t*>(in);
      for (size_t i = 0; i < out.size(); ++i) out[i] = Bfloat16ToFloat(src[i]);
      return;
    }
  }
}

}  // namespace medusa::kernels::cuda
