#include "kernels/topk.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/softmax_stats.h"

namespace medusa::kernels {
namespace {

// NaN ranks below every number (including -inf).
inline bool Better(float a, int32_t ia, float b, int32_t ib) {
  const bool a_nan = std::isnan(a), b_nan = std::isnan(b);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

}  // namespace

void TopK::Select(absl::Span<const float> row, absl::Span<int32_t> out) {
  if (out.empty()) return;
  if (out.size() <= kInsertionLimit) {
    SelectByInsertion(row, out);
  } else {
    SelectByPartition(row, out);
  }
}

void TopK::SelectByInsertion(absl::Span<const float> row, absl::Span<int32_t> out) {
  const size_t k = out.size();
  const size_t n = row.size();
  best_values_.resize(k);
  float* values = best_values_.data();
  int32_t* ids = out.data();
  // Seed with the first k entries, sorted.
  for (size_t i = 0; i < k; ++i) {
    size_t pos = i;
    while (pos > 0 && Better(row[i], static_cast<int32_t>(i), values[pos - 1], ids[pos - 1])) {
      values[pos] = values[pos - 1];
      ids[pos] = ids[pos - 1];
      --pos;
    }
    values[pos] = row[i];
    ids[pos] = static_cast<int32_t>(i);
  }
  // Later entries enter only when strictly larger than the current k-th (a later index
  // loses ties, and a NaN never compares larger). Blocks are screened first by their
  // maximum, a reduction the compiler vectorizes, since most blocks hold no candidate.
  constexpr size_t kBlock = 64;
  size_t i = k;
  while (i < n) {
    if (i + kBlock <= n && !std::isnan(values[k - 1])) {
      const float* block = row.data() + i;
      // A ternary, not std::max: GCC vectorizes this form far better. NaN is skipped.
      float block_max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : block_max)
      for (size_t j = 0; j < kBlock; ++j) block_max = block[j] > block_max ? block[j] : block_max;
      if (!(block_max > values[k - 1])) {
        i += kBlock;
        continue;
      }
    }
    for (const size_t end = std::min(n, i + kBlock); i < end; ++i) {
      const float v = row[i];
      const int32_t id = static_cast<int32_t>(i);
      if (!Better(v, id, values[k - 1], ids[k - 1])) continue;
      size_t pos = k - 1;
      while (pos > 0 && Better(v, id, values[pos - 1], ids[pos - 1])) {
        values[pos] = values[pos - 1];
        ids[pos] = ids[pos - 1];
        --pos;
      }
      values[pos] = v;
      ids[pos] = id;
    }
  }
}

void TopK::SelectByPartition(absl::Span<const float> row, absl::Span<int32_t> out) {
  const size_t k = out.size();
  indices_.resize(row.size());
  for (size_t i = 0; i < row.size(); ++i) indices_[i] = static_cast<int32_t>(i);
  auto better = [&](int32_t a, int32_t b) { return Better(row[a], a, row[b], b); };
  std::nth_element(indices_.begin(), indices_.begin() + (k - 1), indices_.end(), better);
  std::sort(indices_.begin(), indices_.begin() + k, better);
  std::copy(indices_.begin(), indices_.begin() + k, out.begin());
}

int32_t Argmax(absl::Span<const float> row) {
  // Vectorized block maxima (MaxLogit skips NaN), then a scan of the first block reaching the
  // maximum for its position: a vocabulary row is read about once instead of compared entry
  // by entry.
  constexpr int kBlock = 256;
  const float* data = row.data();
  const int n = static_cast<int>(row.size());
  float best = -std::numeric_limits<float>::infinity();
  int best_block = 0;
  for (int b = 0; b < n; b += kBlock) {
    const float m = MaxLogit(absl::MakeConstSpan(data + b, std::min(kBlock, n - b)));
    if (m > best) {  // strictly: the earliest block holding the maximum wins
      best = m;
      best_block = b;
    }
  }
  for (int i = best_block; i < n; ++i) {
    if (data[i] == best) return i;
  }
  return 0;  // every entry NaN
}

void SelectHeadTopK(absl::Span<const float> head_logits, int rows, int width, absl::Span<const int> topk,
                    absl::Span<const int32_t> draft_vocab, TopK* selector, std::vector<int32_t>* ids) {
  size_t per_row = 0;
  for (int k : topk) per_row += k;
  ids->resize(per_row * rows);
  int32_t* out = ids->data();
  for (int r = 0; r < rows; ++r) {
    for (size_t h = 0; h < topk.size(); ++h) {
      const absl::Span<int32_t> best(out, topk[h]);
      selector->Select(head_logits.subspan((static_cast<size_t>(r) * topk.size() + h) * width, width), best);
      if (!draft_vocab.empty()) {
        for (int32_t& id : best) id = draft_vocab[id];
      }
      out += topk[h];
    }
  }
}

}  // namespace medusa::kernels
