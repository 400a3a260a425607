#pragma once
// Products y = x W^T for weights W [out, in] stored as float32, fp16 or bfloat16, x and y in
// float32 (gemm.cu).
//
// The batch-invariant product computes each output y[r, o] by a sequence of operations that
// depends on the row r and the matrix alone, never on how many rows share the call: no
// split-K, one fixed order over `in`. A decode row and the same row inside a 64-node Medusa
// tree get the same bits, which is what keeps Medusa's greedy output identical to plain
// decoding's.
//   fp16 / bf16 weights, `in` a multiple of 64: tensor cores (mma m16n8k16, fp32
//     accumulation), x rounded to the weights' type; each warp owns 16 outputs and walks
//     `in` in order, 64 at a time.
//   Otherwise (fp32 mode, odd sizes): CUDA cores, lane l of a warp accumulating
//     i = l, l + 32, ... in order, then a fixed butterfly over the lanes; fp32 weights keep
//     full fp32 products (no TF32).

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/layer_kernels.h"
#include "kernels/cuda/weight_type.h"

namespace medusa::kernels::cuda {

// y[r * ldy + o] = (accumulate ? y[r * ldy + o] : 0) + sum_i x[r * ldx + i] * w[o * in + i] for
// rows r < rows' count. `x16` is scratch for the tensor-core path: rows.max * in values of
// `type` (unused for fp32 weights).
void LaunchInvariantGemm(const float* x, RowCount rows, int ldx, const void* w, WeightType type, int out, int in,
                         float* y, int ldy, bool accumulate, void* x16, cudaStream_t stream);

// Whether LaunchInvariantGemm takes the tensor-core path for these weights.
bool UsesTensorCores(WeightType type, int in);

}  // namespace medusa::kernels::cuda
