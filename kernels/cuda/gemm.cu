#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/gemm.h"

namespace medusa::kernels::cuda {
namespace {

// ---- CUDA cores -------------------------------------------------------------------------

constexpr int kWarpsPerBlock = 8;
constexpr int kRowsPerChunk = 8;  // rows a warp keeps in registers while it reads a weight row once

// One warp per output column and chunk of rows. blockIdx.x walks the row chunks (fastest, so
// the chunks reading the same weights run together and share them in L2), blockIdx.y the
// outputs.
template <typename T>
__global__ void InvariantGemm(const float* x, RowCount count, int ldx, const T* w, int out, int in, float* y, int ldy,
                              bool accumulate) {
  const int rows = count.count != nullptr ? *count.count : count.max;
  const int lane = threadIdx.x % 32;
  const int o = blockIdx.y * kWarpsPerBlock + threadIdx.x / 32;
  const int r0 = blockIdx.x * kRowsPerChunk;
  if (o >= out || r0 >= rows) return;
  const int nr = min(kRowsPerChunk, rows - r0);
  float acc[kRowsPerChunk];
#pragma unroll
  for (int r = 0; r < kRowsPerChunk; ++r) acc[r] = 0.0f;
  const T* wrow = w + static_cast<int64_t>(o) * in;
  const float* x0 = x + static_cast<int64_t>(r0) * ldx;
  for (int i = lane; i < in; i += 32) {
    const float wv = ToFloat(wrow[i]);
#pragma unroll
    for (int r = 0; r < kRowsPerChunk; ++r) {
      if (r < nr) acc[r] = fmaf(x0[static_cast<int64_t>(r) * ldx + i], wv, acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerChunk; ++r) {
    const float sum = WarpSum(acc[r]);
    if (lane == 0 && r < nr) {
      float* dst = y + static_cast<int64_t>(r0 + r) * ldy + o;
      *dst = accumulate ? *dst + sum : sum;
    }
  }
}

// ---- Tensor cores -----------------------------------------------------------------------

constexpr int kTcWarps = 4;   // 16 outputs each: 64 outputs per block
constexpr int kTcRows = 64;   // rows per block: 8 tiles of 8
constexpr int kSegment = 64;  // `in` per step: 4 mma of k = 16

__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1, __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void Mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1, __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 16 consecutive 16-bit values as 8 words (zeros when `valid` is false).
template <typename T>
__device__ __forceinline__ void Load16(const T* p, bool valid, uint32_t (&words)[8]) {
  uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
  if (valid) {
    lo = *reinterpret_cast<const uint4*>(p);
    hi = *reinterpret_cast<const uint4*>(p + 8);
  }
  words[0] = lo.x, words[1] = lo.y, words[2] = lo.z, words[3] = lo.w;
  words[4] = hi.x, words[5] = hi.y, words[6] = hi.z, words[7] = hi.w;
}

// Warp w of block (row tile, output block) computes outputs [16 w', 16 w' + 16) for the tile's
// rows. The mma's k index is a permutation of `in`: in segment s, mma c, thread t's logical k
// (2t, 2t + 1, 2t + 8, 2t + 9) are physical 64 s + 16 t + 4 c + (0, 1, 2, 3), for the
// weights and x alike, so each thread reads 32 contiguous bytes of a row per segment.
template <typename T>
__global__ void __launch_bounds__(32 * kTcWarps)
    TensorCoreGemm(const T* x, RowCount count, const T* w, int out, int in, float* y, int ldy, bool accumulate) {
  const int rows = count.count != nullptr ? *count.count : count.max;
  const int row0 = blockIdx.x * kTcRows;
  const int m0 = (blockIdx.y * kTcWarps + threadIdx.x / 32) * 16;
  if (row0 >= rows || m0 >= out) return;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tiles = min(kTcRows, rows - row0 + 7) / 8;  // 8-row tiles holding rows
  float acc[kTcRows / 8][4];
#pragma unroll
  for (int n = 0; n < kTcRows / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  const T* w_lo = w + static_cast<int64_t>(m0 + g) * in + 16 * t;
  const T* w_hi = w_lo + static_cast<int64_t>(8) * in;
  const bool lo_valid = m0 + g < out, hi_valid = m0 + g + 8 < out;
  for (int k = 0; k < in; k += kSegment) {
    uint32_t a_lo[8], a_hi[8];
    Load16(w_lo + k, lo_valid, a_lo);
    Load16(w_hi + k, hi_valid, a_hi);
#pragma unroll
    for (int n = 0; n < kTcRows / 8; ++n) {
      if (n < tiles) {
        const int r = row0 + 8 * n + g;
        uint32_t b[8];
        Load16(x + static_cast<int64_t>(r) * in + k + 16 * t, r < rows, b);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          Mma(acc[n], a_lo[2 * c], a_hi[2 * c], a_lo[2 * c + 1], a_hi[2 * c + 1], b[2 * c], b[2 * c + 1], T());
        }
      }
    }
  }
  // acc[n]: (output m0 + g, rows 2t, 2t + 1 of tile n), then (output m0 + g + 8, the same rows).
#pragma unroll
  for (int n = 0; n < kTcRows / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = row0 + 8 * n + 2 * t + (e & 1);
      const int o = m0 + g + (e >= 2 ? 8 : 0);
      if (n < tiles && r < rows && o < out) {
        float* dst = y + static_cast<int64_t>(r) * ldy + o;
        *dst = accumulate ? *dst + acc[n][e] : acc[n][e];
      }
    }
  }
}

// x16[r, i] = (T) x[r * ldx + i] for rows below the count.
template <typename T>
__global__ void RoundRows(const float* x, RowCount count, int ldx, int in, T* x16) {
  const int rows = count.count != nullptr ? *count.count : count.max;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r = i / in, c = i % in;
  if (r >= rows) return;
  x16[i] = FromFloat<T>(x[r * ldx + c]);
}

template <typename T>
void LaunchTensorCore(const float* x, RowCount rows, int ldx, const void* w, int out, int in, float* y, int ldy,
                      bool accumulate, void* x16, cudaStream_t stream) {
  const int64_t values = static_cast<int64_t>(rows.max) * in;
  RoundRows<T><<<static_cast<int>((values + 255) / 256), 256, 0, stream>>>(x, rows, ldx, in, static_cast<T*>(x16));
  const dim3 grid((rows.max + kTcRows - 1) / kTcRows, (out + 16 * kTcWarps - 1) / (16 * kTcWarps));
  TensorCoreGemm<T><<<grid, 32 * kTcWarps, 0, stream>>>(static_cast<const T*>(x16), rows, static_cast<const T*>(w), out,
                                                        in, y, ldy, accumulate);
}

}  // namespace

bool UsesTensorCores(WeightType type, int in) { return type != WeightType::kFloat32 && in % kSegment == 0; }

void LaunchInvariantGemm(const float* x, RowCount rows, int ldx, const void* w, WeightType type, int out, int in,
                         float* y, int ldy, bool accumulate, void* x16, cudaStream_t stream) {
  if (rows.max == 0 || out == 0) return;
  if (UsesTensorCores(type, in)) {
    if (type == WeightType::kFloat16) {
      LaunchTensorCore<__half>(x, rows, ldx, w, out, in, y, ldy, accumulate, x16, stream);
    } else {
      LaunchTensorCore<__nv_bfloat16>(x, rows, ldx, w, out, in, y, ldy, accumulate, x16, stream);
    }
    return;
  }
  const dim3 grid((rows.max + kRowsPerChunk - 1) / kRowsPerChunk, (out + kWarpsPerBlock - 1) / kWarpsPerBlock);
  MEDUSA_DISPATCH_TYPE(type, InvariantGemm<Stored><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(
                                 x, rows, ldx, static_cast<const Stored*>(w), out, in, y, ldy, accumulate));
}

}  // namespace medusa::kernels::cuda
