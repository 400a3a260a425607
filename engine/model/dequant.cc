// The conversions themselves are kernels/model/weight_format.cc's (the
// reference, bit for bit as ggml); this file knows ggml's type ids and spreads
// big tensors over threads.
#include "engine/model/dequant.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/model/weight_format.h"

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

}  // namespace

WeightType ToWeightType(uint32_t type) {
  switch (type) {
    case kF16:
      return WeightType::kF16;
    case kBF16:
      return WeightType::kBF16;
    case kQ8_0:
      return WeightType::kQ8_0;
    case kQ4_0:
      return WeightType::kQ4_0;
    case kQ4_1:
      return WeightType::kQ4_1;
    default:
      return WeightType::kF32;
  }
}

namespace {

// Converts whole blocks [first_block, first_block + n_blocks).
void DequantBlocks(uint32_t type, const GgmlTypeTraits& t, const uint8_t* src, int64_t first_block, int64_t n_blocks,
                   float* dst) {
  DequantizeRow(ToWeightType(type), src + first_block * t.type_size, n_blocks * t.block_size,
                dst + first_block * t.block_size);
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

float HalfToFloat(uint16_t bits) { return medusa::HalfToFloat(bits); }

float BFloat16ToFloat(uint16_t bits) { return medusa::BFloat16ToFloat(bits); }

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
