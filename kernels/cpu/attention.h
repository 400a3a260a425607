#pragma once
// Attention of batch tokens over the paged KV cache, each token with its own rule
// (a prefix of its sequence plus listed extra indices), grouped-query aware.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "kernels/math/aligned_vector.h"
#include "kernels/math/thread_pool.h"

namespace medusa::kernels::cpu {

// Layout of one layer's K and V storage. Each (block, kv head) owns block_size * head_dim
// floats of K and as many of V:
//   K transposed, [head_dim][block_size]: one row holds dimension d of every slot, so a query
//     scores 16 keys with 16-wide multiply-adds and no horizontal sums;
//   V row-wise, [block_size][head_dim]: a slot's value is one contiguous row to accumulate.
struct KvLayout {
  int block_size = 0;
  int n_kv_heads = 0;
  int head_dim = 0;

  size_t head_floats() const { return static_cast<size_t>(block_size) * head_dim; }
  size_t block_floats() const { return n_kv_heads * head_floats(); }
  size_t HeadBase(int32_t block, int head) const { return block * block_floats() + head * head_floats(); }

  // Stores / loads one slot of one kv head (head_dim floats of K and of V).
  void WriteSlot(float* k_layer, float* v_layer, int32_t block, int slot, int head, const float* k,
                 const float* v) const;
  void ReadSlot(const float* k_layer, const float* v_layer, int32_t block, int slot, int head, float* k,
                float* v) const;
};

struct KvLayerView {
  KvLayout layout;
  const float* k = nullptr;
  const float* v = nullptr;
};

// Per-thread working memory, grown to the largest rule seen and then reused.
struct AttentionScratch {
  math::AlignedFloats scores;  // [heads of a group][keys, padded to 16]
  math::AlignedFloats out;     // [heads of a group][head_dim] (generic head sizes only)
};

struct AttentionArgs {
  const ForwardBatch* batch = nullptr;
  // Output row r belongs to batch token rows[r] (identity when null).
  const int32_t* rows = nullptr;
  int n_rows = 0;
  const float* q = nullptr;  // [batch tokens, q_stride], heads at h * head_dim
  int q_stride = 0;
  float* out = nullptr;      // [n_rows, out_stride]
  int out_stride = 0;
  int n_heads = 0;
  KvLayerView kv;
};

// Makes room in every thread's scratch for rules of up to `max_keys` keys (PagedAttention grows
// it on demand too; reserving the cache's capacity up front keeps forward passes allocation-free).
void ReserveAttentionScratch(int max_keys, int head_dim, int threads, std::vector<AttentionScratch>* scratch);

// Runs attention for every row and head: softmax(q k / sqrt(head_dim)) v over the row's
// rule, q head h reading kv head h / (n_heads / n_kv_heads). `scratch` holds one entry per
// thread (resized here to the pool's size). The batch must have been validated.
void PagedAttention(const AttentionArgs& args, math::ThreadPool* pool, std::vector<AttentionScratch>* scratch);

}  // namespace medusa::kernels::cpu
