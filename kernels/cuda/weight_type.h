#pragma once
// The types the CUDA backend stores weights and KV in. No dependencies: kernels include it.

namespace medusa::kernels::cuda {

enum class WeightType { kFloat32, kFloat16, kBfloat16 };

// Bytes per value of the type.
inline int TypeBytes(WeightType type) { return type == WeightType::kFloat32 ? 4 : 2; }

// "f32", "f16" or "bf16".
inline const char* WeightTypeName(WeightType type) {
  switch (type) {
    case WeightType::kFloat32:
      return "f32";
    case WeightType::kFloat16:
      return "f16";
    case WeightType::kBfloat16:
      return "bf16";
  }
  return "?";
}

}  // namespace medusa::kernels::cuda
