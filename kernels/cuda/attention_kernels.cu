#include <cmath>

#include "kernels/cuda/attention_kernels.h"
#include "kernels/cuda/device_types.cuh"
#include "kernels/cuda/plan_layout.h"

namespace medusa::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kPairsPerWarp = kPairsPerTask / kWarps;
constexpr int kChunk = 32;  // keys per step of the softmax, one per lane
constexpr unsigned kAllLanes = 0xFFFFFFFFu;
static_assert(kPairsPerTask % kWarps == 0, "a task's pairs split evenly over the warps");
static_assert(kPartitionKeys % kChunk == 0, "partitions are whole chunks");

// part[k] summed over the warp's lanes for every k, lane l keeping key l's sum: five halving
// exchanges, each lane adding what its partner sends to what it keeps. The order of additions
// is a fixed function of the lane.
__device__ __forceinline__ float ReduceScatter(float (&part)[kChunk]) {
#pragma unroll
  for (int width = kChunk / 2; width >= 1; width /= 2) {
    const bool upper = (threadIdx.x & width) != 0;
#pragma unroll
    for (int i = 0; i < width; ++i) {
      const float send = upper ? part[i] : part[i + width];
      const float keep = upper ? part[i + width] : part[i];
      part[i] = keep + __shfl_xor_sync(kAllLanes, send, width);
    }
  }
  return part[0];
}

// One (row, query head) pair's online softmax: lane l holds head dimensions l, l + 32, ...
template <int kPerLane>
struct PairState {
  float q[kPerLane];
  float acc[kPerLane];
  float max;
  float den;
};

// Keys and values of a tile in shared memory, rows `stride` values apart.
template <typename T>
struct SharedRows {
  const T* k;
  const T* v;
  int stride;
  __device__ const T* key(int i) const { return k + i * stride; }
  __device__ const T* value(int i) const { return v + i * stride; }
};

// Keys and values read from the cache; lane i holds key i's physical slot.
template <typename T>
struct CacheRows {
  const T* k;
  const T* v;
  int kv_dim;
  int64_t slot;
  __device__ const T* key(int i) const { return k + __shfl_sync(kAllLanes, slot, i) * kv_dim; }
  __device__ const T* value(int i) const { return v + __shfl_sync(kAllLanes, slot, i) * kv_dim; }
};

// Adds `count` (1..32) keys to the pair's softmax. Called by the whole warp.
template <typename T, int kPerLane, typename Rows>
__device__ __forceinline__ void AttendChunk(PairState<kPerLane>& s, int count, int head_dim, float scale,
                                            const Rows& rows) {
  const int lane = threadIdx.x % 32;
  float part[kChunk];
#pragma unroll
  for (int k = 0; k < kChunk; ++k) {
    float dot = 0.0f;
    if (k < count) {
      const T* key = rows.key(k);
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < head_dim) dot = fmaf(s.q[j], ToFloat(key[d]), dot);
      }
    }
    part[k] = dot;
  }
  const float dot = ReduceScatter(part);  // every lane takes part in the exchanges
  const float score = lane < count ? dot * scale : -INFINITY;
  const float new_max = fmaxf(s.max, WarpMax(score));
  const float weight = lane < count ? expf(score - new_max) : 0.0f;
  const float correction = expf(s.max - new_max);
  s.den = fmaf(s.den, correction, WarpSum(weight));
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) s.acc[j] *= correction;
  for (int k = 0; k < count; ++k) {
    const float w = __shfl_sync(kAllLanes, weight, k);
    const T* value = rows.value(k);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < head_dim) s.acc[j] = fmaf(w, ToFloat(value[d]), s.acc[j]);
    }
  }
  s.max = new_max;
}

// The union entry holding the row's `rank`-th masked key.
__device__ __forceinline__ int MaskedEntry(const int32_t* mask, int words, int rank) {
  for (int w = 0; w < words; ++w) {
    uint32_t bits = static_cast<uint32_t>(mask[w]);
    const int count = __popc(bits);
    if (rank < count) {
      for (int i = 0; i < rank; ++i) bits &= bits - 1;  // drop the lower set bits
      return w * 32 + __ffs(bits) - 1;
    }
    rank -= count;
  }
  return 0;  // not reached for a valid plan
}

// The physical slot of logical key `key` through a block table.
__device__ __forceinline__ int64_t TableSlot(const int32_t* table, int64_t key, int block_size) {
  return static_cast<int64_t>(table[key / block_size]) * block_size + key % block_size;
}

// Block (task, KV head): see attention_kernels.h. Tasks beyond the plan's count are skipped;
// a block runs tasks blockIdx.x, blockIdx.x + gridDim.x, ...
template <typename T, int kPerLane>
__global__ void __launch_bounds__(kThreads) AttentionTasks(AttentionArgs a) {
  extern __shared__ float4 shared_raw[];
  constexpr int kStride = kPerLane * 32;
  T* tile_k = reinterpret_cast<T*>(shared_raw);
  T* tile_v = tile_k + kChunk * kStride;
  const int32_t* plan = a.plan;
  const int tasks = a.invariant_only ? plan[kPlanInvariantTasks] : plan[kPlanTasks];
  const int kv_head = blockIdx.y;
  const int heads_per_kv = a.n_heads / a.n_kv_heads;
  const int kv_dim = a.n_kv_heads * a.head_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = rsqrtf(static_cast<float>(a.head_dim));
  const T* k_cache = static_cast<const T*>(a.k_cache) + kv_head * a.head_dim;
  const T* v_cache = static_cast<const T*>(a.v_cache) + kv_head * a.head_dim;
  const int32_t* part_begin = plan + plan[kPlanPartBeginAt];
  const int32_t* row_keys = plan + plan[kPlanRowKeysAt];

  for (int t = blockIdx.x; t < tasks; t += gridDim.x) {
    const int32_t* task = plan + plan[kPlanTasksAt] + t * kTaskFields;
    const int32_t* group = plan + plan[kPlanGroupsAt] + task[kTaskGroup] * kGroupFields;
    const int part = task[kTaskPartition];
    const int row_begin = group[kGroupRowBegin], prefix = group[kGroupPrefix];
    const int64_t part_lo = static_cast<int64_t>(part) * group[kGroupPartitionKeys];
    const int64_t part_hi = part_lo + group[kGroupPartitionKeys];
    const int shared_end = prefix / kChunk * kChunk;  // whole chunks of the prefix every row reads
    const int32_t* table = plan + plan[kPlanBlockTablesAt] + group[kGroupTableBegin];

    PairState<kPerLane> s[kPairsPerWarp];
    int rows[kPairsPerWarp], heads[kPairsPerWarp];
    bool active[kPairsPerWarp];
#pragma unroll
    for (int i = 0; i < kPairsPerWarp; ++i) {
      const int p = task[kTaskPairBegin] + warp + kWarps * i;
      rows[i] = row_begin + p / heads_per_kv;
      heads[i] = kv_head * heads_per_kv + p % heads_per_kv;
      active[i] = p < task[kTaskPairEnd] && part < part_begin[rows[i] + 1] - part_begin[rows[i]];
      const float* q = a.qkv + static_cast<int64_t>(rows[i]) * a.qkv_stride + heads[i] * a.head_dim;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + 32 * j;
        s[i].q[j] = active[i] && d < a.head_dim ? q[d] : 0.0f;
        s[i].acc[j] = 0.0f;
      }
      s[i].max = -INFINITY;
      s[i].den = 0.0f;
    }

    // The shared prefix, one tile of 32 keys at a time, read once for every pair.
    const int64_t shared_hi = part_hi < shared_end ? part_hi : shared_end;
    for (int64_t c = part_lo; c < shared_hi; c += kChunk) {
      __syncthreads();  // the previous tile is done with
      for (int i = threadIdx.x; i < kChunk * a.head_dim; i += kThreads) {
        const int k = i / a.head_dim, d = i % a.head_dim;
        const int64_t at = TableSlot(table, c + k, a.block_size) * kv_dim + d;
        tile_k[k * kStride + d] = k_cache[at];
        tile_v[k * kStride + d] = v_cache[at];
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kPairsPerWarp; ++i) {
        if (active[i])
          AttendChunk<T, kPerLane>(s[i], kChunk, a.head_dim, scale, SharedRows<T>{tile_k, tile_v, kStride});
      }
    }

    // Each row's own keys: the prefix's last partial chunk, then its masked union entries.
    const int words = group[kGroupMaskWords];
    const int32_t* union_slots = plan + plan[kPlanUnionSlotsAt] + group[kGroupUnionBegin];
#pragma unroll
    for (int i = 0; i < kPairsPerWarp; ++i) {
      if (!active[i]) continue;
      const int32_t* mask = plan + plan[kPlanMasksAt] + group[kGroupMaskBegin] + (rows[i] - row_begin) * words;
      const int64_t keys = row_keys[rows[i]];
      const int64_t end = part_hi < keys ? part_hi : keys;
      for (int64_t c = part_lo > shared_end ? part_lo : shared_end; c < end; c += kChunk) {
        const int count = static_cast<int>(end - c < kChunk ? end - c : kChunk);
        const int64_t key = c + lane;
        int64_t slot = 0;
        if (lane < count) {
          slot = key < prefix ? TableSlot(table, key, a.block_size)
                              : union_slots[MaskedEntry(mask, words, static_cast<int>(key - prefix))];
        }
        AttendChunk<T, kPerLane>(s[i], count, a.head_dim, scale, CacheRows<T>{k_cache, v_cache, kv_dim, slot});
      }
      const int64_t at = static_cast<int64_t>(part_begin[rows[i]] + part) * a.n_heads + heads[i];
      if (lane == 0) {
        a.partial_max[at] = s[i].max;
        a.partial_den[at] = s[i].den;
      }
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < a.head_dim) a.partial_acc[at * a.head_dim + d] = s[i].acc[j];
      }
    }
  }
}

constexpr int kCombineWarps = 4;

// Block (row, group of heads), one warp per head: the row's partials in order.
template <int kPerLane>
__global__ void CombinePartials(AttentionArgs a) {
  const int32_t* plan = a.plan;
  const int r = blockIdx.x;
  const int rows = a.invariant_only ? plan[kPlanInvariantRows] : plan[kPlanRows];
  const int h = blockIdx.y * kCombineWarps + threadIdx.x / 32;
  if (r >= rows || h >= a.n_heads) return;
  const int lane = threadIdx.x % 32;
  const int32_t* part_begin = plan + plan[kPlanPartBeginAt];
  const int begin = part_begin[r], end = part_begin[r + 1];
  float max = -INFINITY;
  for (int k = begin; k < end; ++k) max = fmaxf(max, a.partial_max[static_cast<int64_t>(k) * a.n_heads + h]);
  float den = 0.0f, acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) acc[j] = 0.0f;
  for (int k = begin; k < end; ++k) {
    const int64_t at = static_cast<int64_t>(k) * a.n_heads + h;
    const float f = expf(a.partial_max[at] - max);
    den = fmaf(a.partial_den[at], f, den);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < a.head_dim) acc[j] = fmaf(a.partial_acc[at * a.head_dim + d], f, acc[j]);
    }
  }
  float* out = a.out + static_cast<int64_t>(r) * a.n_heads * a.head_dim + h * a.head_dim;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + 32 * j;
    if (d < a.head_dim) out[d] = acc[j] / den;
  }
}

template <typename T, int kPerLane>
constexpr int TileBytes() {
  return 2 * kChunk * kPerLane * 32 * static_cast<int>(sizeof(T));
}

template <typename T, int kPerLane>
cudaError_t PrepareOne() {
  return cudaFuncSetAttribute(AttentionTasks<T, kPerLane>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              TileBytes<T, kPerLane>());
}

template <typename T>
cudaError_t PrepareType() {
  for (cudaError_t e : {PrepareOne<T, 1>(), PrepareOne<T, 2>(), PrepareOne<T, 4>(), PrepareOne<T, 8>()}) {
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <typename T, int kPerLane>
void Launch(const AttentionArgs& a, int task_grid, int row_grid, cudaStream_t stream) {
  if (task_grid > 0) {
    AttentionTasks<T, kPerLane><<<dim3(task_grid, a.n_kv_heads), kThreads, TileBytes<T, kPerLane>(), stream>>>(a);
  }
  if (row_grid > 0) {
    CombinePartials<kPerLane>
        <<<dim3(row_grid, (a.n_heads + kCombineWarps - 1) / kCombineWarps), 32 * kCombineWarps, 0, stream>>>(a);
  }
}

template <typename T>
void LaunchType(const AttentionArgs& a, int task_grid, int row_grid, cudaStream_t stream) {
  if (a.head_dim <= 32) {
    Launch<T, 1>(a, task_grid, row_grid, stream);
  } else if (a.head_dim <= 64) {
    Launch<T, 2>(a, task_grid, row_grid, stream);
  } else if (a.head_dim <= 128) {
    Launch<T, 4>(a, task_grid, row_grid, stream);
  } else {
    Launch<T, 8>(a, task_grid, row_grid, stream);
  }
}

// staging[((copy * layers + layer) * 2 + {0: K, 1: V}) * kv_dim + i]
template <typename T>
__global__ void GatherSlots(const int32_t* src_slots, int layers, int64_t layer_values, int kv_dim, const T* k,
                            const T* v, T* staging) {
  const int c = blockIdx.x, layer = blockIdx.y;
  const int64_t from = layer * layer_values + static_cast<int64_t>(src_slots[c]) * kv_dim;
  T* dst = staging + (static_cast<int64_t>(c) * layers + layer) * 2 * kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    dst[i] = k[from + i];
    dst[kv_dim + i] = v[from + i];
  }
}

template <typename T>
__global__ void ScatterSlots(const int32_t* dst_slots, int layers, int64_t layer_values, int kv_dim, T* k, T* v,
                             const T* staging) {
  const int c = blockIdx.x, layer = blockIdx.y;
  const int64_t to = layer * layer_values + static_cast<int64_t>(dst_slots[c]) * kv_dim;
  const T* src = staging + (static_cast<int64_t>(c) * layers + layer) * 2 * kv_dim;
  for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
    k[to + i] = src[i];
    v[to + i] = src[kv_dim + i];
  }
}

}  // namespace

cudaError_t PrepareAttentionKernels() {
  for (cudaError_t e : {PrepareType<float>(), PrepareType<__half>(), PrepareType<__nv_bfloat16>()}) {
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

void LaunchPagedAttention(const AttentionArgs& args, int task_grid, int row_grid, cudaStream_t stream) {
  MEDUSA_DISPATCH_TYPE(args.cache_type, LaunchType<Stored>(args, task_grid, row_grid, stream));
}

void LaunchKvSlotCopy(const int32_t* src_slots, const int32_t* dst_slots, int count, int layers, int64_t layer_values,
                      int kv_dim, void* k_cache, void* v_cache, WeightType type, void* staging, cudaStream_t stream) {
  if (count == 0) return;
  const dim3 grid(count, layers);
  MEDUSA_DISPATCH_TYPE(type, {
    GatherSlots<Stored><<<grid, 128, 0, stream>>>(src_slots, layers, layer_values, kv_dim,
                                                  static_cast<const Stored*>(k_cache),
                                                  static_cast<const Stored*>(v_cache), static_cast<Stored*>(staging));
    ScatterSlots<Stored><<<grid, 128, 0, stream>>>(dst_slots, layers, layer_values, kv_dim,
                                                   static_cast<Stored*>(k_cache), static_cast<Stored*>(v_cache),
                                                   static_cast<const Stored*>(staging));
  });
}

}  // namespace medusa::kernels::cuda
