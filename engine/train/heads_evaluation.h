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
// projection of their own. InvalidArgument naming the size that does not fit, or for Hydra
// heads (their logits depend on a path, not on h alone).
absl::Status ComputeHeadLogitsBatch(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                                    absl::Span<const float> hidden, int rows, absl::Span<float> out,
                                    int threads = 0);

// Per-head top-1..top-max_k accuracy on `data` with the same forward: result[k][j] is the
// fraction of head k's valid targets (not -1) ranked within the top j+1 logits (rank =
// the number of logits strictly greater than the target's). Cumulative, so monotone in j.
// Heads with a draft vocabulary are ranked as they propose: among its tokens only, and a
// target outside it is never within the top k.
// A head with no valid target gets zeros. Uses data's first heads.num_heads target columns.
// Hydra heads are evaluated teacher-forced (each on the path the text took, as trained) and
// need `embedding` [vocab, dim], the model's input embeddings, and the data's next tokens.
absl::StatusOr<std::vector<std::vector<double>>> EvaluateTopK(const MedusaHeadsWeights& heads,
                                                              absl::Span<const float> classifier,
                                                              const DistillSet& data, int max_k = 10, int threads = 0,
                                                              absl::Span<const float> embedding = {});

// EvaluateTopK's accuracies, and how often the heads are right together.
struct HeadsAccuracy {
  std::vector<std::vector<double>> topk;  // EvaluateTopK's
  // [k]: of the positions where the text goes on past head k's target, the fraction where heads
  // 0..k all rank their target first: how often a chain of top-1 proposals is accepted to depth
  // k + 1 (Hydra heads each reading the path the text took). Equal to the product of the heads'
  // top-1 accuracies when their errors are independent; above it when a head is more often right
  // where the heads before it were.
  std::vector<double> chain_top1;
};
absl::StatusOr<HeadsAccuracy> EvaluateHeads(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                                            const DistillSet& data, int max_k = 10, int threads = 0,
                                            absl::Span<const float> embedding = {});

// How well a head's probabilities say how likely its proposals are, and the temperature that
// makes them say it better (temperature scaling, Guo et al. 2017). The probabilities are the
// softmax over the tokens the head proposes from (its draft vocabulary, or all), at logits / T.
struct HeadTemperatureFit {
  double temperature = 1.0;                  // minimizes the fit rows' negative log-likelihood of the target
  double nll_before = 0.0, nll_after = 0.0;  // mean on the evaluation rows whose target it can propose
  // Top-1 expected calibration error on the evaluation rows (15 equal-width confidence bins):
  // the mean gap between the top proposal's probability and how often it is the target.
  double ece_before = 0.0, ece_after = 0.0;
  int fit_rows = 0, eval_rows = 0;
};

// Fits each head's temperature on half of up to `max_rows` rows of `data` (evenly spaced, taken
// alternately for fitting and evaluating) and reports both errors on the other half, before
// and after. InvalidArgument as EvaluateTopK; a head with no row to fit keeps temperature 1.
// Hydra heads as in EvaluateTopK.
absl::StatusOr<std::vector<HeadTemperatureFit>> FitHeadTemperatures(const MedusaHeadsWeights& heads,
                                                                    absl::Span<const float> classifier,
                                                                    const DistillSet& data, int max_rows = 1000,
                                                                    int threads = 0,
                                                                    absl::Span<const float> embedding = {});

}  // namespace medusa
