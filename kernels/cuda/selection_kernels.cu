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

// The block's sum of `value`; every thread gets it.
__device__ __forceinline__ double BlockSum(double value) {
  __shared__ double sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kAllLanes, value, offset);
  __syncthreads();  // the array's previous use is over
  if (threadIdx.x % 32 == 0) sums[threadIdx.x / 32] = value;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) total += sums[w];
  return total;
}

// The block's largest value, NaN skipped (-inf for none); every thread gets it.
__device__ __forceinline__ float BlockMax(float value) {
  __shared__ float maxima[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(kAllLanes, value, offset);
    value = other > value ? other : value;
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) maxima[threadIdx.x / 32] = value;
  __syncthreads();
  float best = maxima[0];
  for (int w = 1; w < kThreads / 32; ++w) best = maxima[w] > best ? maxima[w] : best;
  return best;
}

// Block q: kernels/softmax_stats.h's summary of row rows[q] at temperatures[q]: the largest
// logit, then Z = sum e^x and sum x e^x (x = (l - max) / T, clamped at -87 like the CPU's)
// summed in double, log Z and H = log Z - sum x e^x / Z.
__global__ void SoftmaxStatsRows(const float* logits, int cols, const int32_t* rows, const float* temperatures,
                                 double* stats) {
  const int q = blockIdx.x;
  const float* row = logits + static_cast<int64_t>(rows[q]) * cols;
  float best = -INFINITY;
  for (int i = threadIdx.x; i < cols; i += kThreads) best = row[i] > best ? row[i] : best;
  best = BlockMax(best);
  double* out = stats + 3 * q;
  if (!isfinite(best)) {
    if (threadIdx.x == 0) out[0] = best, out[1] = INFINITY, out[2] = 0.0;
    return;
  }
  const float inv_t = 1.0f / temperatures[q];
  double sum_e = 0.0, sum_xe = 0.0;
  for (int i = threadIdx.x; i < cols; i += kThreads) {
    float x = (row[i] - best) * inv_t;
    x = x > -87.0f ? x : -87.0f;  // NaN too
    const float e = expf(x);
    sum_e += e;
    sum_xe += static_cast<double>(x) * e;
  }
  sum_e = BlockSum(sum_e);
  sum_xe = BlockSum(sum_xe);
  if (threadIdx.x == 0) {
    const double log_z = log(sum_e);
    out[0] = best;
    out[1] = log_z;
    out[2] = fmax(0.0, log_z - sum_xe / sum_e);
  }
}

__global__ void GatherLogits(const float* logits, int cols, const int32_t* rows, const int32_t* tokens, int count,
                             float* out) {
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  if (q < count) out[q] = logits[static_cast<int64_t>(rows[q]) * cols + tokens[q]];
}

}  // namespace

void LaunchSoftmaxStats(const float* logits, int cols, const int32_t* rows, const float* temperatures, int count,
                        double* stats, cudaStream_t stream) {
  if (count == 0) return;
  SoftmaxStatsRows<<<count, kThreads, 0, stream>>>(logits, cols, rows, temperatures, stats);
}

void LaunchGatherLogits(const float* logits, int cols, const int32_t* rows, const int32_t* tokens, int count,
                        float* out, cudaStream_t stream) {
  if (count == 0) return;
  GatherLogits<<<(count + kThreads - 1) / kThreads, kThreads, 0, stream>>>(logits, cols, rows, tokens, count, out);
}

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
