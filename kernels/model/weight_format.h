#pragma once
// How a weight matrix is kept in memory: float32, 16-bit floats, or ggml's
// blocks of 32 values (Q8_0, Q4_0, Q4_1), byte for byte as GGUF files store
// them. A matrix [rows, cols] in a block type is its rows one after another,
// each cols / 32 blocks:
//   Q8_0: f16 d, 32 int8 q                         value = q * d
//   Q4_0: f16 d, 16 bytes (low nibbles are values 0..15, high nibbles 16..31)
//   value = (q - 8) * d Q4_1: f16 d, f16 m, 16 bytes as in Q4_0        value =
//   q * d + m
// Conversions here are the reference (ggml's quantize_row_*_ref and
// dequantize_row_*), so a file's weights come back bit for bit and our
// quantization matches llama.cpp's.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace medusa {

enum class WeightType { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1 };

// What the user asks for with --weights: `auto` keeps each matrix as its file
// stores it.
enum class WeightMode { kAuto, kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1 };

const char* WeightTypeName(WeightType type);  // "q4_1"
const char* WeightModeName(WeightMode mode);  // "auto"
// "auto", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1" (any case);
// InvalidArgument otherwise.
absl::StatusOr<WeightMode> ParseWeightMode(absl::string_view text);

// Values per block: 32 for the block types, 1 for the float types.
int BlockValues(WeightType type);
// Bytes per block.
int BlockBytes(WeightType type);
// Whether a row of `cols` values can be stored as `type` (whole blocks).
bool FitsBlocks(WeightType type, int64_t cols);
// Bytes of one row of `cols` values; requires FitsBlocks.
size_t RowBytes(WeightType type, int64_t cols);

// The type a matrix stored as `stored` is kept in under `mode`: the stored type
// for kAuto, else the mode's; float32 where the row length is not whole blocks
// of that type.
WeightType ChooseWeightType(WeightMode mode, WeightType stored, int64_t cols);

// IEEE binary16 and bfloat16 <-> float32 (round to nearest even; NaN stays
// NaN).
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);

// `n` values (whole blocks) of `type` from `src` into `dst`, and back.
// `src`/`dst` need no alignment.
void DequantizeRow(WeightType type, const uint8_t* src, int64_t n, float* dst);
void QuantizeRow(WeightType type, const float* src, int64_t n, uint8_t* dst);

// A whole [rows, cols] matrix converted between float32 and `type` (float32
// copies).
std::vector<uint8_t> QuantizeMatrix(WeightType type, const float* values, int64_t rows, int64_t cols);
std::vector<float> DequantizeMatrix(WeightType type, const uint8_t* bytes, int64_t rows, int64_t cols);

}  // namespace medusa
