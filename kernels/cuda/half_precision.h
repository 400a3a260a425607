#pragma once
// float32 to and from the 16-bit formats the CUDA backend stores weights and KV in, on the
// host: IEEE binary16 (fp16) and bfloat16, both rounded to nearest, ties to even, as the
// hardware's conversions round. fp16 keeps subnormals and turns values past its range into
// infinity; NaN stays NaN in both formats.

#include <cstdint>

#include "absl/types/span.h"
#include "kernels/cuda/weight_type.h"

namespace medusa::kernels::cuda {

uint16_t FloatToHalf(float value);
float HalfToFloat(uint16_t bits);
uint16_t FloatToBfloat16(float value);
float Bfloat16ToFloat(uint16_t bits);

// `values` converted to `type`, written to `out` (values.size() * TypeBytes(type) bytes).
void ConvertFloats(absl::Span<const float> values, WeightType type, void* out);
// out.size() values of `type` at `in`, as floats (exact: every fp16 and bf16 value is a float).
void ConvertToFloats(const void* in, WeightType type, absl::Span<float> out);

}  // namespace medusa::kernels::cuda
