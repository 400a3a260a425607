#pragma once
// ggml tensor types: sizes of every type a GGUF file may hold (so a file can be
// opened and range-checked even when it holds types we do not compute with), and
// conversion to float32 for the types the engine reads: F32, F16, BF16, Q8_0, Q4_0, Q4_1.

#include <cstdint>
#include <string>

#include "kernels/model/weight_format.h"

namespace medusa::gguf {

struct GgmlTypeTraits {
  const char* name;    // "Q4_1"
  int64_t block_size;  // elements per block (1 for plain float types)
  int64_t type_size;   // bytes per block
};

// nullptr when `type` is no ggml type this reader knows.
const GgmlTypeTraits* FindGgmlType(uint32_t type);
// "Q4_1 (3)", or "unknown (99)".
std::string GgmlTypeName(uint32_t type);
bool CanDequantize(uint32_t type);
// The engine's type for a ggml type id CanDequantize accepts (kF32 for F32 and
// any other id).
WeightType ToWeightType(uint32_t type);

float HalfToFloat(uint16_t bits);      // IEEE binary16
float BFloat16ToFloat(uint16_t bits);  // bfloat16

// Converts `count` elements of `type` (a multiple of its block size) from `src` into
// `dst`; large inputs are split across OpenMP threads. `src` needs no alignment.
// Precondition: CanDequantize(type).
void Dequantize(uint32_t type, const uint8_t* src, int64_t count, float* dst);

}  // namespace medusa::gguf
