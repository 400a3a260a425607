#pragma once
// Dynamic Medusa trees (the idea of EAGLE-2's draft trees, on Medusa heads): instead of one
// tree for every step, each step keeps the `budget` nodes of a larger envelope tree whose whole
// path is most likely to be accepted this step. A path's estimate is the product, along it, of
// each head's probability for its token (softmax of the head's logits over the tokens it
// proposes from, at the head's calibrated temperature): the heads are independent, so node
// probabilities multiply. A child's estimate never exceeds its parent's, so the kept nodes
// always form a tree.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/medusa/tree.h"
#include "kernels/topk.h"

namespace medusa {

// One step's proposals: per head, its best tokens (best first) and their probabilities.
struct HeadProposals {
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<double>> probability;
};

// One head row's proposals: its k best tokens (best first; draft entries mapped to token ids
// when `draft_vocab` is not empty) and their probabilities under softmax(logits / temperature).
// `selector` lends its buffers. InvalidArgument for k outside [1, row size] or a draft
// vocabulary of another size.
absl::Status RowProposals(absl::Span<const float> logits, absl::Span<const int32_t> draft_vocab, int k,
                          double temperature, kernels::TopK* selector, std::vector<int32_t>* ids,
                          std::vector<double>* probability);

// Proposals from one sequence's head logits (Backend::MedusaHeadLogits: head h's row is
// `width` values, entry i for token draft_vocab[i], or token i without a draft vocabulary):
// head h's topk[h] best tokens with their probabilities at temperature[h] (1 where the list is
// shorter). InvalidArgument when the logits are too short or a head is asked for more tokens
// than it has.
absl::StatusOr<HeadProposals> ProposalsFromLogits(absl::Span<const float> head_logits, int width,
                                                  absl::Span<const int32_t> draft_vocab, absl::Span<const int> topk,
                                                  absl::Span<const double> temperature);

// The paths (ranks from the root) of the `budget` nodes of `envelope`, root excluded, with the
// largest estimated path probability; ties go to the shallower, then the earlier node, so a
// node's parent is always kept before it. `proposals` covers envelope.topk(h) tokens of every
// head it uses. All nodes when the budget is larger.
std::vector<std::vector<int>> ChooseDynamicPaths(const MedusaTree& envelope, const HeadProposals& proposals,
                                                 int budget);

}  // namespace medusa
