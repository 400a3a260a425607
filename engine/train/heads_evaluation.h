#pragma once
// Medusa heads evaluated with the trainer's own forward (float32 on BLAS, the whole
// vocabulary): their logits for hidden states, and their top-k accuracy on held-out rows
// (the calibration that trees are built from).

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/train/distill_set.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa {

// Head logits for `rows` hidden states [rows, dim] with the trainer's (BLAS) forward:
// out [num_heads, rows, vocab]. `classifier` [vocab, dim] is needed when the heads have no
// projection of their own. InvalidArgument naming the size that does not fit.
absl::Status ComputeHeadLogitsBatch(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                                    absl::Span<const float> hidden, int rows, absl::Span<float> out,
                                    int threads = 0);

// Per-head top-1..top-max_k accuracy on `data` with the same forward: result[k][j] is the
// fraction of head k's valid targets (not -1) ranked within the top j+1 logits (rank =
// the number of logits strictly greater than the target's). Cumulative, so monotone in j.
// Heads with a draft vocabulary are ranked as they propose: among its tokens only, and a
// target outside it is never within the top k.
// A head with no valid target gets zeros. Uses data's first heads.num_heads target columns.
absl::StatusOr<std::vector<std::vector<double>>> EvaluateTopK(const MedusaHeadsWeights& heads,
                                                              absl::Span<const float> classifier,
                                                              const DistillSet& data, int max_k = 10,
                                                              int threads = 0);

}  // namespace medusa
