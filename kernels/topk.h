#pragma once
// Selecting the best entries of a row of logits on the CPU: the k largest (TopK) and the
// largest (Argmax), in the order every backend and the engine agree on: larger first,
// equal values by the smaller index, NaN below every number.

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace medusa::kernels {

// The k largest entries of a row by partial selection (no full sort), reusing its
// buffers across calls. Order: largest first; equal values by smaller index first;
// NaN ranks below every number.
class TopK {
 public:
  // Writes the top out.size() indices of `row` into `out`, largest first.
  // Precondition: out.size() <= row.size().
  void Select(absl::Span<const float> row, absl::Span<int32_t> out);

 private:
  // k up to kInsertionLimit: one pass keeping a sorted list of the best k.
  static constexpr size_t kInsertionLimit = 64;
  void SelectByInsertion(absl::Span<const float> row, absl::Span<int32_t> out);
  void SelectByPartition(absl::Span<const float> row, absl::Span<int32_t> out);

  std::vector<float> best_values_;
  std::vector<int32_t> indices_;  // partition path
};

// The index of the largest value, the first on ties (what greedy decoding picks). NaN is
// skipped; 0 for a row of NaN.
int32_t Argmax(absl::Span<const float> row);

// Backend::MedusaHeadTopK's answer from the heads' logits [rows, topk.size(), width] (as
// Backend::MedusaHeadLogits gives them): ids [rows][sum of topk], entries mapped through
// `draft_vocab` when it is not empty. `selector` lends its buffers.
void SelectHeadTopK(absl::Span<const float> head_logits, int rows, int width, absl::Span<const int> topk,
                    absl::Span<const int32_t> draft_vocab, TopK* selector, std::vector<int32_t>* ids);

}  // namespace medusa::kernels
