#include "engine/train/draft_vocab.h"

#include <algorithm>
#include <numeric>

namespace medusa {

std::vector<int32_t> ChooseDraftVocab(absl::Span<const int64_t> counts, double coverage, int min_size) {
  std::vector<int32_t> order(counts.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return counts[a] > counts[b]; });
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  const size_t floor = std::min(static_cast<size_t>(std::max(min_size, 1)), order.size());
  size_t size = 0;
  int64_t covered = 0;
  while (size < order.size() && (size < floor || static_cast<double>(covered) < coverage * total)) {
    covered += counts[order[size++]];
  }
  order.resize(size);
  return order;
}


std::vector<int32_t> DraftVocabOf(const DistillSet& data, int vocab, double coverage, int min_size) {
  std::vector<int64_t> counts(vocab, 0);
  for (int r = 0; r < data.rows(); ++r) {
    const int32_t token = data.Targets(r)[0];
    if (token >= 0 && token < vocab) ++counts[token];
  }
  return ChooseDraftVocab(counts, std::min(coverage, 1.0), min_size);
}

}  // namespace medusa
