#pragma once
// Which candidates of a Medusa step to keep, from the base model's verification pass.
//
// Convention (the reference implementation's): the tree's root is the token the base
// model chose at the end of the previous step; it was emitted then, and this step's
// forward pass writes its KV entry. A child node is "accepted" when its token passes
// the acceptance rule against its parent's logits row (the base model's prediction
// after the parent). The step keeps the longest accepted root-to-node path and emits:
//   - the accepted nodes' tokens (root excluded), then
//   - one "bonus" token chosen from the base distribution after the last accepted node
//     (argmax when greedy, sampled otherwise); it becomes the next step's root.
// So a step yields accepted + 1 tokens for one forward pass. The last accepted node's
// logits row gave the bonus token, and its hidden state feeds the heads next step.
//
// Rules:
//   - Greedy: child x of node n is accepted iff x == argmax(logits_n) (first index on
//     ties, like Argmax). Siblings hold distinct tokens, so at most one child per node
//     passes and the accepted path is what plain greedy decoding would produce.
//   - Typical acceptance (Medusa paper §2.3.1, used when sampling): child x of node n is
//     accepted iff p_n(x) > min(epsilon, delta * exp(-H(p_n))), where p_n =
//     softmax(logits_n / temperature) (no top-k / top-p: the criterion is about the
//     model's own distribution) and H(p_n) its entropy. The reference computes
//     H with log(p + 1e-5); we use the exact entropy. Defaults: epsilon 0.09 (the
//     reference's posterior_threshold), delta 0.3 (posterior_alpha).
//   - Rejection sampling (exact; SpecInfer's multi-candidate rule for drafts that are
//     proposed deterministically, as the heads' top-k are): walk down from the root. At
//     node n, with target q = the sampler's distribution of row n (temperature, top-k,
//     top-p: exactly what plain sampling draws from), try n's children in tree order
//     (the heads' rank order): child x is accepted with probability q(x) / (mass left);
//     a rejected token's probability is removed from q. The first accepted child becomes
//     n and the walk goes on; when every child is rejected (or n is a leaf), the bonus
//     token is drawn from what is left of q. Each emitted token is then distributed
//     exactly as plain sampling would draw it: P(first child) = q(x1); P(second) =
//     (1 - q(x1)) * q(x2) / (1 - q(x1)) = q(x2); and so on, the residual taking the
//     rest. Unlike typical acceptance, the output distribution is the model's own; the
//     price is fewer accepted drafts at high temperature.
// Longest path, ties: greedy - the first in tree order (smallest node index);
// typical - the highest likelihood (sum of log p_n(x) along the path, as the reference
// does), then the first in tree order. Rejection sampling follows one path by construction.

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/medusa/tree.h"
#include "engine/sampling/sampler.h"
#include "kernels/softmax_stats.h"

namespace medusa {

// How draft tokens are accepted when sampling (temperature > 0). Greedy decoding always
// uses exact match with the argmax.
enum class SamplingAcceptance {
  kTypical,    // the Medusa paper's typical acceptance (epsilon, delta): fast, approximate
  kRejection,  // rejection sampling over the tree: the exact sampling distribution
};

struct AcceptanceOptions {
  // Typical acceptance's parameters.
  float epsilon = 0.09f;  // hard threshold (reference: posterior_threshold)
  float delta = 0.3f;     // entropy-dependent threshold scale (reference: posterior_alpha)
  SamplingAcceptance rule = SamplingAcceptance::kTypical;  // last, so {epsilon, delta} still initializes
};

// The rule named "typical" or "rejection" (InvalidArgument for another name).
absl::StatusOr<SamplingAcceptance> ParseSamplingAcceptance(absl::string_view name);

struct AcceptedPath {
  // Tree nodes from the root to the last accepted node; nodes[0] == 0. Their KV entries
  // (slot context + node) are the ones to keep, in this order.
  std::vector<int> nodes;
  // Tokens this step emits: the accepted nodes' tokens, then the bonus token.
  std::vector<int32_t> tokens;

  int accepted() const { return static_cast<int>(nodes.size()) - 1; }  // draft tokens kept
  int last_node() const { return nodes.back(); }
  int32_t bonus_token() const { return tokens.back(); }
};

// The typical-acceptance statistics of one logits row at a temperature (> 0), in double:
// the log normalizer and the entropy, so p(x) = exp((logit_x - max) / T - log_z).
// NaN entries are ignored; a row with no finite maximum accepts nothing (threshold inf).
struct TypicalRowStats {
  double max_logit = 0;
  double log_z = 0;    // log sum exp((l - max) / T)
  double entropy = 0;  // -sum p log p
  double threshold = 0;  // min(epsilon, delta * exp(-entropy))
};
TypicalRowStats ComputeTypicalRowStats(absl::Span<const float> row, double temperature,
                                       const AcceptanceOptions& options);
// The same from a backend's summary of the row (kernels/softmax_stats.h).
TypicalRowStats TypicalStatsOf(const kernels::SoftmaxStats& softmax, const AcceptanceOptions& options);
// log p(token) under the row's tempered softmax.
double TypicalLogProb(const TypicalRowStats& stats, float logit, double temperature);

// Per-step acceptance with reusable buffers (no allocation once warmed up for a tree).
class Acceptor {
 public:
  // The tree must outlive the acceptor.
  Acceptor(const MedusaTree& tree, int vocab, AcceptanceOptions options = {});

  // `node_tokens`: the tree's tokens (num_nodes, node 0 = root); `logits`: the
  // verification pass's rows [num_nodes, vocab], row n = the base model's logits after
  // node n. The result points into this acceptor and stays valid until the next call.
  // InvalidArgument on wrong sizes or a token outside the vocabulary.
  absl::StatusOr<const AcceptedPath*> AcceptGreedy(absl::Span<const int32_t> node_tokens,
                                                   absl::Span<const float> logits);
  // The same from each node's greedy token alone (`argmax`: num_nodes entries, the largest
  // logit's id of each row, as Backend::Forward's want_argmax gives them).
  absl::StatusOr<const AcceptedPath*> AcceptGreedy(absl::Span<const int32_t> node_tokens,
                                                   absl::Span<const int32_t> argmax);
  // Typical acceptance at sampler.params().temperature; the bonus token is
  // sampler.Sample(row of the last accepted node) (temperature, top-k, top-p, seed).
  // Greedy sampling params (temperature 0) give AcceptGreedy.
  absl::StatusOr<const AcceptedPath*> AcceptTypical(absl::Span<const int32_t> node_tokens,
                                                    absl::Span<const float> logits,
                                                    Sampler& sampler);
  // Typical acceptance from what a backend computed where the logits are (a GPU copies back
  // these, not the rows): `row_stats` per node (row n's softmax summary at the sampler's
  // temperature; only parents' are read), `child_logits` per node (node n >= 1: its token's
  // logit in its parent's row; entry 0 unused), and `row_of(n)`, asked once, for the row the
  // bonus token is drawn from.
  // The same path and tokens as the overload above given the same numbers. Sampling params
  // only (InvalidArgument when greedy).
  using RowReader = std::function<absl::StatusOr<absl::Span<const float>>(int node)>;
  absl::StatusOr<const AcceptedPath*> AcceptTypical(absl::Span<const int32_t> node_tokens,
                                                    absl::Span<const kernels::SoftmaxStats> row_stats,
                                                    absl::Span<const float> child_logits, const RowReader& row_of,
                                                    Sampler& sampler);
  // Rejection sampling at the sampler's params (see the rules above); uniform draws and
  // the bonus token come from the sampler's seeded stream. Greedy params give AcceptGreedy.
  absl::StatusOr<const AcceptedPath*> AcceptRejection(absl::Span<const int32_t> node_tokens,
                                                      absl::Span<const float> logits,
                                                      Sampler& sampler);
  // Greedy when the sampler is greedy, else the options' rule.
  absl::StatusOr<const AcceptedPath*> Accept(absl::Span<const int32_t> node_tokens,
                                             absl::Span<const float> logits, Sampler& sampler);

  const AcceptanceOptions& options() const { return options_; }

 private:
  absl::Status CheckSizes(absl::Span<const int32_t> node_tokens,
                          absl::Span<const float> logits) const;
  absl::Span<const float> Row(absl::Span<const float> logits, int node) const {
    return logits.subspan(static_cast<size_t>(node) * vocab_, vocab_);
  }
  // Rejection: a draw from target_ (a node's distribution less its rejected tokens).
  int32_t SampleResidual(Sampler& sampler, absl::Span<const float> row);
  // Greedy acceptance given each node's greedy token, argmax(node).
  template <typename ArgmaxOf>
  const AcceptedPath* GreedyPath(absl::Span<const int32_t> node_tokens, ArgmaxOf argmax);
  // Typical acceptance's walk: the last node of the best accepted path, from each parent's
  // stats (stats_of(p)) and each node's token's logit in its parent's row (child_logit(n)).
  template <typename StatsOf, typename ChildLogit>
  int TypicalBest(double temperature, StatsOf stats_of, ChildLogit child_logit);
  // Node p's stats, computed once per step (stats_ready_ is cleared at the step's start).
  template <typename Compute>
  const TypicalRowStats& CachedStats(int p, Compute compute) {
    if (!stats_ready_[p]) {
      stats_[p] = compute();
      stats_ready_[p] = 1;
    }
    return stats_[p];
  }
  // Fills result_ from the chosen last node and the bonus token.
  void Finish(absl::Span<const int32_t> node_tokens, int last, int32_t bonus);

  const MedusaTree* tree_;
  int vocab_;
  AcceptanceOptions options_;
  std::vector<uint8_t> accepted_;    // per node
  std::vector<double> likelihood_;   // per node: sum of log p along the path (typical)
  std::vector<int32_t> argmax_;      // per node, -1 until computed (greedy)
  std::vector<TypicalRowStats> stats_;  // per node (typical)
  std::vector<uint8_t> stats_ready_;
  std::vector<float> target_;  // rejection: the distribution of the current node's row
  AcceptedPath result_;
};

}  // namespace medusa
