#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/layer_kernels.h"

namespace medusa::kernels::cuda {
namespace {

constexpr int kThreads = 256;

int Blocks(int64_t work) { return static_cast<int>((work + kThreads - 1) / kThreads); }

// Element i of a [rows, cols] launch, or false past the device's row count.
__device__ __forceinline__ bool Element(const int32_t* count, int cols, int64_t* r, int64_t* c) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  *r = i / cols;
  *c = i % cols;
  return *r < *count;
}

template <typename T>
__global__ void EmbeddingGather(const T* table, const int32_t* tokens, const int32_t* count, int dim, float* out) {
  int64_t r, d;
  if (!Element(count, dim, &r, &d)) return;
  out[r * dim + d] = ToFloat(table[static_cast<int64_t>(tokens[r]) * dim + d]);
}

// One block per row: the sum of squares in a fixed order (strided per thread, then a tree
// over the block), so a row's result never depends on the batch around it.
__global__ void RmsNorm(const float* x, const float* weight, const int32_t* count, int dim, int ld, float eps,
                        float* out) {
  if (static_cast<int>(blockIdx.x) >= *count) return;
  __shared__ float partial[kThreads / 32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * ld;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sum = fmaf(row[i], row[i], sum);
  sum = WarpSum(sum);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  const float inv = rsqrtf(total / static_cast<float>(dim) + eps);
  float* dst = out + static_cast<int64_t>(blockIdx.x) * ld;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = row[i] * inv * weight[i];
}

// One block per row; thread i rotates pair i of every head, then the row's K and V are stored.
template <typename T>
__global__ void RopeAndWriteKv(float* qkv, const int32_t* count, const int32_t* positions, const int32_t* kv_slots,
                               const double* inv_freq, int n_heads, int n_kv_heads, int head_dim, T* k_cache,
                               T* v_cache) {
  const int r = blockIdx.x;
  if (r >= *count) return;
  const int half = head_dim / 2;
  const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
  float* row = qkv + static_cast<int64_t>(r) * (q_dim + 2 * kv_dim);
  const double position = positions[r];
  for (int i = threadIdx.x; i < (n_heads + n_kv_heads) * half; i += blockDim.x) {
    const int head = i / half, pair = i % half;
    double s, c;
    sincos(position * inv_freq[pair], &s, &c);
    const float cf = static_cast<float>(c), sf = static_cast<float>(s);
    float* v = row + head * head_dim + 2 * pair;
    const float a = v[0], b = v[1];
    v[0] = a * cf - b * sf;
    v[1] = a * sf + b * cf;
  }
  __syncthreads();
  const int64_t slot = kv_slots[r];
  const float* k = row + q_dim;
  const float* val = k + kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    k_cache[slot * kv_dim + i] = FromFloat<T>(k[i]);
    v_cache[slot * kv_dim + i] = FromFloat<T>(val[i]);
  }
}

__device__ __forceinline__ float Silu(float z) { return z / (1.0f + expf(-z)); }

__global__ void SwiGlu(const float* gate_up, const int32_t* count, int hidden, float* out) {
  int64_t r, c;
  if (!Element(count, hidden, &r, &c)) return;
  const float* row = gate_up + r * 2 * hidden;
  out[r * hidden + c] = Silu(row[c]) * row[hidden + c];
}

__global__ void GatherRows(const float* x, const int32_t* rows, const int32_t* count, int dim, float* out) {
  int64_t r, c;
  if (!Element(count, dim, &r, &c)) return;
  out[r * dim + c] = x[static_cast<int64_t>(rows[r]) * dim + c];
}

__global__ void BiasSiluResidual(const float* y, const float* bias, int rows, int dim, float* x, int ldx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(rows) * dim) return;
  const int64_t r = i / dim, c = i % dim;
  x[r * ldx + c] += Silu(y[i] + bias[c]);
}

template <typename T>
__global__ void ConvertRows(const float* in, int rows, int cols, int ld_in, T* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(rows) * cols) return;
  const int64_t r = i / cols, c = i % cols;
  out[i] = FromFloat<T>(in[r * ld_in + c]);
}

}  // namespace

void LaunchEmbeddingGather(const void* table, WeightType type, const int32_t* tokens, RowCount rows, int dim,
                           float* out, cudaStream_t stream) {
  if (rows.max == 0) return;
  MEDUSA_DISPATCH_TYPE(type,
                       EmbeddingGather<Stored><<<Blocks(static_cast<int64_t>(rows.max) * dim), kThreads, 0, stream>>>(
                           static_cast<const Stored*>(table), tokens, rows.count, dim, out));
}

void LaunchRmsNorm(const float* x, const float* weight, RowCount rows, int dim, int ld, float eps, float* out,
                   cudaStream_t stream) {
  if (rows.max == 0) return;
  RmsNorm<<<rows.max, kThreads, 0, stream>>>(x, weight, rows.count, dim, ld, eps, out);
}

void LaunchRopeAndWriteKv(float* qkv, RowCount rows, const int32_t* positions, const int32_t* kv_slots,
                          const double* inv_freq, int n_heads, int n_kv_heads, int head_dim, void* k_cache,
                          void* v_cache, WeightType cache_type, cudaStream_t stream) {
  if (rows.max == 0) return;
  MEDUSA_DISPATCH_TYPE(cache_type, RopeAndWriteKv<Stored><<<rows.max, 128, 0, stream>>>(
                                       qkv, rows.count, positions, kv_slots, inv_freq, n_heads, n_kv_heads, head_dim,
                                       static_cast<Stored*>(k_cache), static_cast<Stored*>(v_cache)));
}

void LaunchSwiGlu(const float* gate_up, RowCount rows, int hidden, float* out, cudaStream_t stream) {
  if (rows.max == 0) return;
  SwiGlu<<<Blocks(static_cast<int64_t>(rows.max) * hidden), kThreads, 0, stream>>>(gate_up, rows.count, hidden, out);
}

void LaunchGatherRows(const float* x, const int32_t* rows, RowCount count, int dim, float* out, cudaStream_t stream) {
  if (count.max == 0) return;
  GatherRows<<<Blocks(static_cast<int64_t>(count.max) * dim), kThreads, 0, stream>>>(x, rows, count.count, dim, out);
}

void LaunchBiasSiluResidual(const float* y, const float* bias, int rows, int dim, float* x, int ldx,
                            cudaStream_t stream) {
  if (rows == 0) return;
  BiasSiluResidual<<<Blocks(static_cast<int64_t>(rows) * dim), kThreads, 0, stream>>>(y, bias, rows, dim, x, ldx);
}

void LaunchConvertRows(const float* in, int rows, int cols, int ld_in, void* out, WeightType type,
                       cudaStream_t stream) {
  if (rows == 0) return;
  MEDUSA_DISPATCH_TYPE(type, ConvertRows<Stored><<<Blocks(static_cast<int64_t>(rows) * cols), kThreads, 0, stream>>>(
                                 in, rows, cols, ld_in, static_cast<Stored*>(out)));
}

}  // namespace medusa::kernels::cuda
