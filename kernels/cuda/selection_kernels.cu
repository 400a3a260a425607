#include <cmath>

#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/selection_kernels.h"

namespace medusa::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kAllLanes = 0xFFFFFFFFu;

// Whether (a, ia) comes before (b, ib); index -1 is "nothing yet", after everything.
__device__ __forceinline__ bool Better(float a, int ia, float b, int ib) {
  if (ib < 0) return ia >= 0;
  if (ia < 0) return false;
  const bool a_nan = isnan(a), b_nan = isnan(b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

// The block's best (value, index); every thread gets it.
__device__ __forceinline__ void BlockBest(float* value, int* index) {
  __shared__ float values[kThreads / 32];
  __shared__ int indices[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(kAllLanes, *value, offset);
    const int i = __shfl_xor_sync(kAllLanes, *index, offset);
    if (Better(v, i, *value, *index)) *value = v, *index = i;
  }
  const int warp = threadIdx.x / 32;
  __syncthreads();  // the arrays' previous use is over
  if (threadIdx.x % 32 == 0) values[warp] = *value, indices[warp] = *index;
  __syncthreads();
  *value = values[0];
  *index = indices[0];
  for (int w = 1; w < kThreads / 32; ++w) {
    if (Better(values[w], indices[w], *value, *index)) *value = values[w], *index = indices[w];
  }
}

__global__ void ArgmaxRows(const float* logits, RowCount count, int cols, int32_t* out) {
  const int r = blockIdx.x;
  if (r >= (count.count != nullptr ? *count.count : count.max)) return;
  const float* row = logits + static_cast<int64_t>(r) * cols;
  float best = 0.0f;
  int best_index = -1;
  for (int i = threadIdx.x; i < cols; i += kThreads) {
    if (Better(row[i], i, best, best_index)) best = row[i], best_index = i;
  }
  BlockBest(&best, &best_index);
  if (threadIdx.x == 0) out[r] = best_index < 0 ? 0 : best_index;
}

// Block (row, segment): k rounds, each taking the best entry after the previous one's.
__global__ void TopKRows(const float* logits, int segments, int cols, const int32_t* topk, const int32_t* offset,
                         int total, const int32_t* map, int32_t* out) {
  const int r = blockIdx.x, h = blockIdx.y;
  const float* row = logits + (static_cast<int64_t>(r) * segments + h) * cols;
  int32_t* dst = out + static_cast<int64_t>(r) * total + offset[h];
  float previous = 0.0f;
  int previous_index = -1;
  for (int k = 0; k < topk[h]; ++k) {
    float best = 0.0f;
    int best_index = -1;
    for (int i = threadIdx.x; i < cols; i += kThreads) {
      const bool after = previous_index < 0 || Better(previous, previous_index, row[i], i);
      if (after && Better(row[i], i, best, best_index)) best = row[i], best_index = i;
    }
    BlockBest(&best, &best_index);
    if (threadIdx.x == 0) dst[k] = map != nullptr ? map[best_index] : best_index;
    previous = best;
    previous_index = best_index;
  }
}

}  // namespace

void LaunchArgmaxRows(const float* logits, RowCount rows, int cols, int32_t* out, cudaStream_t stream) {
  if (rows.max == 0) return;
  ArgmaxRows<<<rows.max, kThreads, 0, stream>>>(logits, rows, cols, out);
}

void LaunchTopKRows(const float* logits, int rows, int segments, int cols, const int32_t* topk, const int32_t* offset,
                    int total, const int32_t* map, int32_t* out, cudaStream_t stream) {
  if (rows == 0 || segments == 0) return;
  TopKRows<<<dim3(rows, segments), kThreads, 0, stream>>>(logits, segments, cols, topk, offset, total, map, out);
}

}  // namespace medusa::kernels::cuda
