#pragma once
// Launchers of attention over the paged KV cache (attention_kernels.cu) and of the KV slot
// copy that compacts accepted Medusa paths.
//
// Attention runs in two launches over a step plan (step_plan.h). The first runs the plan's
// tasks: a task is one query group's (row, head) pairs over one partition of their keys, for
// one KV head; the group's shared prefix goes through shared memory in tiles of 32 keys read
// once for every pair, then each row walks the rest of its keys (prefix remainder, masked
// union) itself. Each pair leaves a partial: running max, denominator and weighted sum of
// values. The second combines a row's partials in order into its output.
//
// Per pair, keys go in chunks of 32 at fixed positions of the row's key order: 32 dot products
// (lanes over head dimensions, a fixed butterfly leaving key i's score in lane i), one max,
// one exponential each, then the values added in key order. The arithmetic depends on the row
// and its keys alone.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/weight_type.h"

namespace medusa::kernels::cuda {

// The largest head size the attention kernels take.
inline constexpr int kMaxHeadDim = 256;

struct AttentionArgs {
  const int32_t* plan = nullptr;  // the step plan's buffer, on the device
  const float* qkv = nullptr;     // [rows, qkv_stride]: Q heads first
  int qkv_stride = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int block_size = 0;
  const void* k_cache = nullptr;  // this layer's [slots, n_kv_heads * head_dim]
  const void* v_cache = nullptr;
  WeightType cache_type = WeightType::kFloat32;
  // Partials, [plan parts * n_heads] each and [plan parts * n_heads * head_dim].
  float* partial_max = nullptr;
  float* partial_den = nullptr;
  float* partial_acc = nullptr;
  float* out = nullptr;  // [rows, n_heads * head_dim]
  // Only the invariant rows (the last layer, whose other rows nobody reads).
  bool invariant_only = false;
};

// Makes the kernels ready for head sizes up to kMaxHeadDim (shared memory beyond the default
// limit). Call once per process before the first launch.
cudaError_t PrepareAttentionKernels();

// Runs the plan's tasks and combines the partials. `task_grid` and `row_grid` bound the plan's
// task and row counts (exact counts for a step launched directly; a shape's capacity for a
// captured graph, whose extra blocks find nothing to do).
void LaunchPagedAttention(const AttentionArgs& args, int task_grid, int row_grid, cudaStream_t stream);

// Copies KV slots (physical, src_slots[i] to dst_slots[i]) in every layer, K and V; every
// source is read before any destination is written (through `staging`, count * layers *
// 2 * kv_dim values of `type`). Layer l's K cache starts at k_cache + l * layer_values.
void LaunchKvSlotCopy(const int32_t* src_slots, const int32_t* dst_slots, int count, int layers, int64_t layer_values,
                      int kv_dim, void* k_cache, void* v_cache, WeightType type, void* staging, cudaStream_t stream);

}  // namespace medusa::kernels::cuda
