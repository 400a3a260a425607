#pragma once
// Loading the CUDA backend's stored types (float32, fp16, bfloat16) as float inside kernels.
// Device code only: included by the .cu files.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/weight_type.h"

namespace medusa::kernels::cuda {

template <typename T>
__device__ __forceinline__ float ToFloat(T value);
template <>
__device__ __forceinline__ float ToFloat<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half value) {
  return __half2float(value);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float value);
template <>
__device__ __forceinline__ float FromFloat<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

// The sum of `value` over the warp's 32 lanes, every lane getting it; butterfly order, so the
// result never depends on anything but the lanes' values.
__device__ __forceinline__ float WarpSum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xFFFFFFFFu, value, offset);
  return value;
}

__device__ __forceinline__ float WarpMax(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value = fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, offset));
  return value;
}

}  // namespace medusa::kernels::cuda

// Calls `body` with `Stored` set to the C++ type of a WeightType value.
#define MEDUSA_DISPATCH_TYPE(type, ...)                    \
  switch (type) {                                          \
    case ::medusa::kernels::cuda::WeightType::kFloat32: {  \
      using Stored = float;                                \
      __VA_ARGS__;                                         \
      break;                                               \
    }                                                      \
    case ::medusa::kernels::cuda::WeightType::kFloat16: {  \
      using Stored = __half;                               \
      __VA_ARGS__;                                         \
      break;                                               \
    }                                                      \
    case ::medusa::kernels::cuda::WeightType::kBfloat16: { \
      using Stored = __nv_bfloat16;                        \
      __VA_ARGS__;                                         \
      break;                                               \
    }                                                      \
  }
