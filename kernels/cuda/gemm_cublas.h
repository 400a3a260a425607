#pragma once
// Products y = x W^T through cuBLAS, for prompt rows whose outputs nobody reads (the step
// plan's rows past its output rows): the fastest product for many rows, whose result for a
// row may depend on the rows beside it. fp16 / bf16 weights take x rounded to their type
// and accumulate in fp32; fp32 weights compute in full fp32 (no TF32).

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "kernels/cuda/half_precision.h"

namespace medusa::kernels::cuda {

// y[r * ldy + o] = (accumulate ? y[r * ldy + o] : 0) + sum_i x[r * ldx + i] * w[o * in + i] for
// r < rows, on the handle's stream. `x16`: scratch of rows * in values of `type` (unused for fp32).
absl::Status CublasGemm(cublasHandle_t handle, const float* x, int rows, int ldx, const void* w, WeightType type,
                        int out, int in, float* y, int ldy, bool accumulate, void* x16, cudaStream_t stream);

}  // namespace medusa::kernels::cuda
