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
// Longest path, ties: greedy - the first in tree order (smallest node index);
// typical - the highest likelihood (sum of log p_n(x) along the path, as the reference
// does), then the first in tree order.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/medusa/tree.h"
#include "engine/sampling/sampler.h"

namespace medusa {

struct TypicalAcceptanceOptions {
  float epsilon = 0.09f;  // hard threshold (reference: posterior_threshold)
  float delta = 0.3f;     // entropy-dependent threshold scale (reference: posterior_alpha)
};

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
                                       const TypicalAcceptanceOptions& options);
// log p(token) under the row's tempered softmax.
double TypicalLogProb(const TypicalRowStats& stats, float logit, double temperature);

// Per-step acceptance with reusable buffers (no allocation once warmed up for a tree).
class Acceptor {
 public:
  // The tree must outlive the acceptor.
  Acceptor(const MedusaTree& tree, int vocab, TypicalAcceptanceOptions options = {});

  // `node_tokens`: the tree's tokens (num_nodes, node 0 = root); `logits`: the
  // verification pass's rows [num_nodes, vocab], row n = the base model's logits after
  // node n. The result points into this acceptor and stays valid until the next call.
  // InvalidArgument on wrong sizes or a token outside the vocabulary.
  absl::StatusOr<const AcceptedPath*> AcceptGreedy(absl::Span<const int32_t> node_tokens,
                                                   absl::Span<const float> logits);
  // Typical acceptance at sampler.params().temperature; the bonus token is
  // sampler.Sample(row of the last accepted node) (temperature, top-k, top-p, seed).
  // Greedy sampling params (temperature 0) give AcceptGreedy.
  absl::StatusOr<const AcceptedPath*> AcceptTypical(absl::Span<const int32_t> node_tokens,
                                                    absl::Span<const float> logits,
                                                    Sampler& sampler);
  // Greedy or typical, by the sampler's params.
  absl::StatusOr<const AcceptedPath*> Accept(absl::Span<const int32_t> node_tokens,
                                             absl::Span<const float> logits, Sampler& sampler);

  const TypicalAcceptanceOptions& options() const { return options_; }

 private:
  absl::Status CheckSizes(absl::Span<const int32_t> node_tokens,
                          absl::Span<const float> logits) const;
  absl::Span<const float> Row(absl::Span<const float> logits, int node) const {
    return logits.subspan(static_cast<size_t>(node) * vocab_, vocab_);
  }
  // Fills result_ from the chosen last node and the bonus token.
  void Finish(absl::Span<const int32_t> node_tokens, int last, int32_t bonus);

  const MedusaTree* tree_;
  int vocab_;
  TypicalAcceptanceOptions options_;
  std::vector<uint8_t> accepted_;    // per node
  std::vector<double> likelihood_;   // per node: sum of log p along the path (typical)
  std::vector<int32_t> argmax_;      // per node, -1 until computed (greedy)
  std::vector<TypicalRowStats> stats_;  // per node (typical)
  std::vector<uint8_t> stats_ready_;
  AcceptedPath result_;
};

}  // namespace medusa
