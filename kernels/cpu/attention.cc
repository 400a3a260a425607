#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/vector_ops.h"

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

inline size_t PaddedKeys(int keys) { return (static_cast<size_t>(keys) + 15) / 16 * 16; }

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
#if defined(__AVX512F__)
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int c0 = 0; c0 < count; c0 += 16) {
    const __mmask16 m = count - c0 >= 16 ? static_cast<__mmask16>(0xFFFF) : TailMask(count - c0);
    __m512 acc[kHeads];
    for (int h = 0; h < kHeads; ++h) acc[h] = _mm512_setzero_ps();
    const float* row = kt + c0;
    const size_t row_stride = block_size;
    for (int d = 0; d < head_dim; ++d, row += row_stride) {
      const __m512 keys = _mm512_maskz_loadu_ps(m, row);
      for (int h = 0; h < kHeads; ++h) acc[h] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * head_dim + d]), keys, acc[h]);
    }
    for (int h = 0; h < kHeads; ++h) _mm512_mask_storeu_ps(scores + h * stride + c0, m, _mm512_mul_ps(acc[h], vscale));
  }
#else
  for (int h = 0; h < kHeads; ++h) {
    for (int j = 0; j < count; ++j) {
      float s = 0.0f;
      for (int d = 0; d < head_dim; ++d) s += q[h * head_dim + d] * kt[static_cast<size_t>(d) * block_size + j];
      scores[h * stride + j] = s * scale;
    }
  }
#endif
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

#if defined(__AVX512F__)
// out_h = sum_j p[h * stride + j] * v_j with head_dim = 16 * kVectors, accumulated in registers.
template <int kVectors, int kHeads>
void WeightedValues(const AttentionArgs& args, const BatchToken& t, int kv_head, const float* p, size_t stride,
                    float* out) {
  __m512 acc[kHeads][kVectors];
  for (int h = 0; h < kHeads; ++h)
    for (int c = 0; c < kVectors; ++c) acc[h][c] = _mm512_setzero_ps();
  ForEachValue(args, t, kv_head, [&](int j, const float* row) {
    __m512 v[kVectors];
    for (int c = 0; c < kVectors; ++c) v[c] = _mm512_loadu_ps(row + 16 * c);
    for (int h = 0; h < kHeads; ++h) {
      const __m512 w = _mm512_set1_ps(p[h * stride + j]);
      for (int c = 0; c < kVectors; ++c) acc[h][c] = _mm512_fmadd_ps(w, v[c], acc[h][c]);
    }
  });
  for (int h = 0; h < kHeads; ++h)
    for (int c = 0; c < kVectors; ++c) _mm512_storeu_ps(out + h * 16 * kVectors + 16 * c, acc[h][c]);
}

// The register-resident variant for this head size and head count, or null.
using WeightedValuesFn = void (*)(const AttentionArgs&, const BatchToken&, int, const float*, size_t, float*);
WeightedValuesFn RegisterWeightedValues(int head_dim, int heads) {
  if (head_dim == 64) {
    static constexpr WeightedValuesFn fns[] = {WeightedValues<4, 1>, WeightedValues<4, 2>, WeightedValues<4, 3>,
                                               WeightedValues<4, 4>};
    return fns[heads - 1];
  }
  if (head_dim == 128) {  // 8 registers a head: at most 2 heads stay in registers
    if (heads == 1) return WeightedValues<8, 1>;
    if (heads == 2) return WeightedValues<8, 2>;
  }
  if (head_dim == 32) {
    static constexpr WeightedValuesFn fns[] = {WeightedValues<2, 1>, WeightedValues<2, 2>, WeightedValues<2, 3>,
                                               WeightedValues<2, 4>};
    return fns[heads - 1];
  }
  return nullptr;
}
#endif

// Any head size: accumulate in memory.
void WeightedValuesGeneric(const AttentionArgs& args, const BatchToken& t, int kv_head, int heads, const float* p,
                           size_t stride, float* out) {
  const int head_dim = args.kv.layout.head_dim;
  std::fill(out, out + static_cast<size_t>(heads) * head_dim, 0.0f);
  ForEachValue(args, t, kv_head, [&](int j, const float* row) {
    for (int h = 0; h < heads; ++h) Axpy(p[h * stride + j], row, out + h * head_dim, head_dim);
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
    const float sum = ExpShiftedSum(s, n, Max(s, n));
    Scale(1.0f / sum, s, n);
  }
#if defined(__AVX512F__)
  if (WeightedValuesFn fn = RegisterWeightedValues(head_dim, heads)) {
    fn(args, t, kv_head, scores, stride, out);
    return;
  }
#endif
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

void PagedAttention(const AttentionArgs& args, ThreadPool* pool, std::vector<AttentionScratch>* scratch) {
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
