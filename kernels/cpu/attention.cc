#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/math/vector_ops.h"

namespace medusa::kernels::cpu {

void KvLayout::WriteSlot(float* k_layer, float* v_layer, int32_t block, int slot, int head, const float* k,
                         const float* v) const {
  const size_t base = HeadBase(block, head);
  float* kt = k_layer + base + slot;
  for (int d = 0; d < head_dim; ++d) kt[static_cast<size_t>(d) * block_size] = k[d];
  std::copy_n(v, head_dim, v_layer + base + static_cast<size_t>(slot) * head_dim);
}

void KvLayout::ReadSlot(const float* k_layer, const float* v_layer, int32_t block, int slot, int head, float* k,
                        float* v) const {
  const size_t base = HeadBase(block, head);
  const float* kt = k_layer + base + slot;
  for (int d = 0; d < head_dim; ++d) k[d] = kt[static_cast<size_t>(d) * block_size];
  std::copy_n(v_layer + base + static_cast<size_t>(slot) * head_dim, head_dim, v);
}

namespace {

// q heads scored together against one load of each key tile row (registers bound it).
constexpr int kMaxHeadsPerPass = 4;

inline int TokenIndexOfRow(const AttentionArgs& args, int row) { return args.rows != nullptr ? args.rows[row] : row; }

inline int KeysOf(const BatchToken& t) { return t.attend_prefix + t.extra_count; }

// Score rows are padded to whole vectors.
inline size_t PaddedKeys(int keys) {
  return (static_cast<size_t>(keys) + math::simd::kLanes - 1) / math::simd::kLanes * math::simd::kLanes;
}

// Calls fn(first_key, block, count) for each block-sized run of the prefix [0, prefix).
template <typename Fn>
void ForEachPrefixRun(absl::Span<const int32_t> table, int prefix, int block_size, Fn&& fn) {
  for (int start = 0; start < prefix; start += block_size) {
    fn(start, table[start / block_size], std::min(block_size, prefix - start));
  }
}

// scores[h * stride + j] = scale * q_h . key_j for keys j < count of one transposed K tile
// ([head_dim][block_size]) and kHeads query heads (head_dim apart in q).
// Not inlined: inside the big attention routine GCC ran out of registers and kept the row
// pointer on the stack, a store-to-load chain through every iteration of the inner loop.
template <int kHeads>
__attribute__((noinline)) void ScoreTile(const float* kt, int block_size, int head_dim, int count, const float* q, float scale, float* scores,
               size_t stride) {
  using namespace math::simd;
  const Vec vscale = Set1(scale);
  const size_t row_stride = block_size;
  for (int c0 = 0; c0 < count; c0 += kLanes) {
    const int lanes = std::min(kLanes, count - c0);
    Vec acc[kHeads];
    for (int h = 0; h < kHeads; ++h) acc[h] = Zero();
    const float* row = kt + c0;
    if (lanes == kLanes) {
      for (int d = 0; d < head_dim; ++d, row += row_stride) {
        const Vec keys = Load(row);
        for (int h = 0; h < kHeads; ++h) acc[h] = Fma(Set1(q[h * head_dim + d]), keys, acc[h]);
      }
      for (int h = 0; h < kHeads; ++h) Store(scores + h * stride + c0, Mul(acc[h], vscale));
    } else {
      for (int d = 0; d < head_dim; ++d, row += row_stride) {
        const Vec keys = MaskedLoad(row, lanes);
        for (int h = 0; h < kHeads; ++h) acc[h] = Fma(Set1(q[h * head_dim + d]), keys, acc[h]);
      }
      for (int h = 0; h < kHeads; ++h) MaskedStore(scores + h * stride + c0, lanes, Mul(acc[h], vscale));
    }
  }
}

void ScoreTileHeads(int heads, const float* kt, int block_size, int head_dim, int count, const float* q, float scale,
                    float* scores, size_t stride) {
  switch (heads) {
    case 4: ScoreTile<4>(kt, block_size, head_dim, count, q, scale, scores, stride); break;
    case 3: ScoreTile<3>(kt, block_size, head_dim, count, q, scale, scores, stride); break;
    case 2: ScoreTile<2>(kt, block_size, head_dim, count, q, scale, scores, stride); break;
    default: ScoreTile<1>(kt, block_size, head_dim, count, q, scale, scores, stride); break;
  }
}

// Scores of `heads` q heads over every key of the token's rule, into scores[h * stride + j].
void Score(const AttentionArgs& args, const BatchToken& t, int kv_head, const float* q, int heads, float scale,
           float* scores, size_t stride) {
  const KvLayout& kv = args.kv.layout;
  const absl::Span<const int32_t> table = args.batch->block_tables[t.seq];
  ForEachPrefixRun(table, t.attend_prefix, kv.block_size, [&](int first, int32_t block, int count) {
    ScoreTileHeads(heads, args.kv.k + kv.HeadBase(block, kv_head), kv.block_size, kv.head_dim, count, q, scale,
                   scores + first, stride);
  });
  // Extras (a tree node's ancestors) go through the same tile code, one key each: every
  // score then rounds exactly as in a causal pass, so verifying a tree writes and reads
  // bit-identical K/V to plain decoding, and greedy Medusa output equals plain output.
  for (int e = 0; e < t.extra_count; ++e) {
    const int32_t index = args.batch->extra_indices[t.extra_begin + e];
    const float* kt = args.kv.k + kv.HeadBase(table[index / kv.block_size], kv_head) + index % kv.block_size;
    ScoreTileHeads(heads, kt, kv.block_size, kv.head_dim, 1, q, scale, scores + t.attend_prefix + e, stride);
  }
}

// Calls fn(j, value_row) for every key j of the token's rule.
template <typename Fn>
void ForEachValue(const AttentionArgs& args, const BatchToken& t, int kv_head, Fn&& fn) {
  const KvLayout& kv = args.kv.layout;
  const absl::Span<const int32_t> table = args.batch->block_tables[t.seq];
  ForEachPrefixRun(table, t.attend_prefix, kv.block_size, [&](int first, int32_t block, int count) {
    const float* rows = args.kv.v + kv.HeadBase(block, kv_head);
    for (int s = 0; s < count; ++s) fn(first + s, rows + static_cast<size_t>(s) * kv.head_dim);
  });
  for (int e = 0; e < t.extra_count; ++e) {
    const int32_t index = args.batch->extra_indices[t.extra_begin + e];
    fn(t.attend_prefix + e, args.kv.v + kv.HeadBase(table[index / kv.block_size], kv_head) +
                                static_cast<size_t>(index % kv.block_size) * kv.head_dim);
  }
}

// out_h = sum_j p[h * stride + j] * v_j with head_dim = kLanes * kVectors, accumulated in
// registers (the same multiply-adds, in the same order, as the generic loop below).
template <int kVectors, int kHeads>
void WeightedValues(const AttentionArgs& args, const BatchToken& t, int kv_head, const float* p, size_t stride,
                    float* out) {
  using namespace math::simd;
  Vec acc[kHeads][kVectors];
  for (int h = 0; h < kHeads; ++h)
    for (int c = 0; c < kVectors; ++c) acc[h][c] = Zero();
  ForEachValue(args, t, kv_head, [&](int j, const float* row) {
    Vec v[kVectors];
    for (int c = 0; c < kVectors; ++c) v[c] = Load(row + kLanes * c);
    for (int h = 0; h < kHeads; ++h) {
      const Vec w = Set1(p[h * stride + j]);
      for (int c = 0; c < kVectors; ++c) acc[h][c] = Fma(w, v[c], acc[h][c]);
    }
  });
  for (int h = 0; h < kHeads; ++h)
    for (int c = 0; c < kVectors; ++c) Store(out + h * kLanes * kVectors + kLanes * c, acc[h][c]);
}

// The register-resident variant for this head size and head count, or null. Accumulators,
// the value row (kept whole when several heads share it) and the weights must fit the
// register file: 32 registers with AVX-512, 16 with AVX2.
using WeightedValuesFn = void (*)(const AttentionArgs&, const BatchToken&, int, const float*, size_t, float*);
WeightedValuesFn RegisterWeightedValues(int head_dim, int heads) {
  constexpr int kRegisters = math::simd::kLanes == 16 ? 32 : 16;
  if (head_dim % math::simd::kLanes != 0) return nullptr;
  const int vectors = head_dim / math::simd::kLanes;
  if (heads * vectors + (heads > 1 ? vectors : 1) + heads > kRegisters) return nullptr;
  switch (vectors * 8 + heads) {
    case 1 * 8 + 1: return WeightedValues<1, 1>;
    case 1 * 8 + 2: return WeightedValues<1, 2>;
    case 1 * 8 + 3: return WeightedValues<1, 3>;
    case 1 * 8 + 4: return WeightedValues<1, 4>;
    case 2 * 8 + 1: return WeightedValues<2, 1>;
    case 2 * 8 + 2: return WeightedValues<2, 2>;
    case 2 * 8 + 3: return WeightedValues<2, 3>;
    case 2 * 8 + 4: return WeightedValues<2, 4>;
    case 4 * 8 + 1: return WeightedValues<4, 1>;
    case 4 * 8 + 2: return WeightedValues<4, 2>;
    case 4 * 8 + 3: return WeightedValues<4, 3>;
    case 4 * 8 + 4: return WeightedValues<4, 4>;
    case 8 * 8 + 1: return WeightedValues<8, 1>;
    case 8 * 8 + 2: return WeightedValues<8, 2>;
    default: return nullptr;
  }
}

// Any head size: accumulate in memory.
void WeightedValuesGeneric(const AttentionArgs& args, const BatchToken& t, int kv_head, int heads, const float* p,
                           size_t stride, float* out) {
  const int head_dim = args.kv.layout.head_dim;
  std::fill(out, out + static_cast<size_t>(heads) * head_dim, 0.0f);
  ForEachValue(args, t, kv_head, [&](int j, const float* row) {
    for (int h = 0; h < heads; ++h) math::Axpy(p[h * stride + j], row, out + h * head_dim, head_dim);
  });
}

// The q heads [first_head, first_head + heads) of one row, all reading kv head `kv_head`.
void AttendHeads(const AttentionArgs& args, int row, int kv_head, int first_head, int heads,
                 AttentionScratch* scratch) {
  const int head_dim = args.kv.layout.head_dim;
  const int token_index = TokenIndexOfRow(args, row);
  const BatchToken& t = args.batch->tokens[token_index];
  const int n = KeysOf(t);
  const size_t stride = PaddedKeys(n);
  float* scores = scratch->scores.data();
  const float* q = args.q + static_cast<size_t>(token_index) * args.q_stride + static_cast<size_t>(first_head) * head_dim;
  float* out = args.out + static_cast<size_t>(row) * args.out_stride + static_cast<size_t>(first_head) * head_dim;

  Score(args, t, kv_head, q, heads, 1.0f / std::sqrt(static_cast<float>(head_dim)), scores, stride);
  for (int h = 0; h < heads; ++h) {
    float* s = scores + h * stride;
    const float sum = math::ExpShiftedSum(s, n, math::Max(s, n));
    math::Scale(1.0f / sum, s, n);
  }
  if (WeightedValuesFn fn = RegisterWeightedValues(head_dim, heads)) {
    fn(args, t, kv_head, scores, stride, out);
    return;
  }
  // Too many heads to keep in registers together: one at a time when one fits.
  if (WeightedValuesFn fn = RegisterWeightedValues(head_dim, 1)) {
    for (int h = 0; h < heads; ++h) fn(args, t, kv_head, scores + h * stride, stride, out + h * head_dim);
    return;
  }
  WeightedValuesGeneric(args, t, kv_head, heads, scores, stride, scratch->out.data());
  for (int h = 0; h < heads; ++h) {
    std::copy_n(scratch->out.data() + static_cast<size_t>(h) * head_dim, head_dim, out + static_cast<size_t>(h) * head_dim);
  }
}

// One row and kv head: its group of q heads, kMaxHeadsPerPass at a time.
void AttendGroup(const AttentionArgs& args, int row, int kv_head, AttentionScratch* scratch) {
  const int group = args.n_heads / args.kv.layout.n_kv_heads;
  // 128-wide heads take 8 registers each: two at a time keep the sums in registers.
  const int per_pass = args.kv.layout.head_dim == 128 ? 2 : kMaxHeadsPerPass;
  for (int first = 0; first < group; first += per_pass) {
    AttendHeads(args, row, kv_head, kv_head * group + first, std::min(per_pass, group - first), scratch);
  }
}

}  // namespace

void ReserveAttentionScratch(int max_keys, int head_dim, int threads, std::vector<AttentionScratch>* scratch) {
  if (static_cast<int>(scratch->size()) < threads) scratch->resize(threads);
  const size_t score_floats = PaddedKeys(max_keys) * kMaxHeadsPerPass;
  const size_t out_floats = static_cast<size_t>(kMaxHeadsPerPass) * head_dim;
  for (AttentionScratch& s : *scratch) {
    if (s.scores.size() < score_floats) s.scores.resize(std::max(score_floats, s.scores.size() * 3 / 2));
    if (s.out.size() < out_floats) s.out.resize(out_floats);
  }
}

void PagedAttention(const AttentionArgs& args, math::ThreadPool* pool, std::vector<AttentionScratch>* scratch) {
  const int n_kv_heads = args.kv.layout.n_kv_heads;
  int max_keys = 0;
  long long total_work = 0;
  for (int r = 0; r < args.n_rows; ++r) {
    const int keys = KeysOf(args.batch->tokens[TokenIndexOfRow(args, r)]);
    max_keys = std::max(max_keys, keys);
    total_work += keys;
  }
  total_work *= static_cast<long long>(args.n_heads) * args.kv.layout.head_dim;
  const int team = total_work < (1 << 15) ? 1 : pool->size();
  ReserveAttentionScratch(max_keys, args.kv.layout.head_dim, pool->size(), scratch);
  pool->ParallelFor(team, args.n_rows * n_kv_heads, [&](int item, int thread) {
    AttendGroup(args, item / n_kv_heads, item % n_kv_heads, &(*scratch)[thread]);
  });
}

}  // namespace medusa::kernels::cpu
