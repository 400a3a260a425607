#pragma once
// Launchers of the element-wise kernels of a Llama layer (layer_kernels.cu): the embedding
// gather, RMSNorm, RoPE with the KV write, SwiGLU, the gather of output rows, and the Medusa
// ResBlock's epilogue. Plain pointers to device memory; everything runs on `stream`.
//
// Kernels of the forward pass read their row count from device memory (a RowCount: the step
// plan's header) and are launched for `max` rows, so a captured CUDA graph replays any step
// of up to `max` rows; rows past the count do nothing.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/weight_type.h"

namespace medusa::kernels::cuda {

struct RowCount {
  const int32_t* count = nullptr;  // on the device
  int max = 0;                     // the launch covers this many rows
};

// out[r] = table[tokens[r]] (a [vocab, dim] matrix of `type`), as float.
void LaunchEmbeddingGather(const void* table, WeightType type, const int32_t* tokens, RowCount rows, int dim,
                           float* out, cudaStream_t stream);

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, rows `ld` floats apart in both.
void LaunchRmsNorm(const float* x, const float* weight, RowCount rows, int dim, int ld, float eps, float* out,
                   cudaStream_t stream);

// For each row of qkv [rows, (n_heads + 2 n_kv_heads) * head_dim]: rotates its Q and K heads in
// place at positions[r] (adjacent pairs, angle position * inv_freq[i] in double), then writes
// its K and V into the layer's cache at physical slot kv_slots[r] (caches [slots, kv_dim]).
void LaunchRopeAndWriteKv(float* qkv, RowCount rows, const int32_t* positions, const int32_t* kv_slots,
                          const double* inv_freq, int n_heads, int n_kv_heads, int head_dim, void* k_cache,
                          void* v_cache, WeightType cache_type, cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, hidden + i].
void LaunchSwiGlu(const float* gate_up, RowCount rows, int hidden, float* out, cudaStream_t stream);

// out[i] = x[rows[i]] for `dim` floats per row.
void LaunchGatherRows(const float* x, const int32_t* rows, RowCount count, int dim, float* out, cudaStream_t stream);

// x[r, i] += silu(y[r, i] + bias[i]) for rows `ldx` (x) and `dim` (y) floats apart.
void LaunchBiasSiluResidual(const float* y, const float* bias, int rows, int dim, float* x, int ldx,
                            cudaStream_t stream);

// out[r, i] = (Stored) in[r * ld_in + i] for `rows` rows (cuBLAS inputs).
void LaunchConvertRows(const float* in, int rows, int cols, int ld_in, void* out, WeightType type, cudaStream_t stream);

}  // namespace medusa::kernels::cuda
