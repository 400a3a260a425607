#include "engine/medusa/acceptance.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "kernels/softmax_stats.h"
#include "kernels/topk.h"

namespace medusa {

TypicalRowStats ComputeTypicalRowStats(absl::Span<const float> row, double temperature,
                                       const AcceptanceOptions& options) {
  return TypicalStatsOf(kernels::TemperedSoftmaxStats(row, temperature), options);
}

TypicalRowStats TypicalStatsOf(const kernels::SoftmaxStats& softmax, const AcceptanceOptions& options) {
  TypicalRowStats stats;
  stats.max_logit = softmax.max_logit;
  stats.log_z = softmax.log_z;
  stats.entropy = softmax.entropy;
  stats.threshold = std::isfinite(softmax.log_z)
                        ? std::min<double>(options.epsilon, options.delta * std::exp(-softmax.entropy))
                        : std::numeric_limits<double>::infinity();
  return stats;
}

absl::StatusOr<SamplingAcceptance> ParseSamplingAcceptance(absl::string_view name) {
  if (name == "typical") return SamplingAcceptance::kTypical;
  if (name == "rejection") return SamplingAcceptance::kRejection;
  return absl::InvalidArgumentError(
      absl::StrCat("acceptance must be typical or rejection, got '", name, "'"));
}

double TypicalLogProb(const TypicalRowStats& stats, float logit, double temperature) {
  return (logit - stats.max_logit) / temperature - stats.log_z;
}

Acceptor::Acceptor(const MedusaTree& tree, int vocab, AcceptanceOptions options)
    : tree_(&tree), vocab_(vocab), options_(options) {
  const int n = tree.num_nodes();
  accepted_.assign(n, 0);
  likelihood_.assign(n, 0.0);
  argmax_.assign(n, -1);
  stats_.assign(n, TypicalRowStats{});
  stats_ready_.assign(n, 0);
  result_.nodes.reserve(tree.max_depth() + 1);
  result_.tokens.reserve(tree.max_depth() + 1);
}

absl::Status Acceptor::CheckSizes(absl::Span<const int32_t> node_tokens,
                                  absl::Span<const float> logits) const {
  const size_t n = tree_->num_nodes();
  if (node_tokens.size() != n || logits.size() != n * static_cast<size_t>(vocab_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Medusa acceptance: the tree has ", n, " nodes and the vocabulary ", vocab_,
        " tokens, but got ", node_tokens.size(), " tokens and ", logits.size(), " logits"));
  }
  for (size_t i = 0; i < n; ++i) {
    if (node_tokens[i] < 0 || node_tokens[i] >= vocab_) {
      return absl::InvalidArgumentError(absl::StrCat("Medusa acceptance: node ", i, " has token ",
                                                     node_tokens[i], ", outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

void Acceptor::Finish(absl::Span<const int32_t> node_tokens, int last, int32_t bonus) {
  result_.nodes.clear();
  result_.tokens.clear();
  for (int node : tree_->ancestors(last)) {
    result_.nodes.push_back(node);
    if (node != 0) result_.tokens.push_back(node_tokens[node]);
  }
  result_.tokens.push_back(bonus);
}

template <typename ArgmaxOf>
const AcceptedPath* Acceptor::GreedyPath(absl::Span<const int32_t> node_tokens, ArgmaxOf argmax) {
  const MedusaTree& tree = *tree_;
  // Parents come before children, so one pass in node order decides every node.
  accepted_[0] = 1;
  int best = 0;
  for (int n = 1; n < tree.num_nodes(); ++n) {
    const int p = tree.parent(n);
    accepted_[n] = accepted_[p] && node_tokens[n] == argmax(p);
    if (accepted_[n] && tree.depth(n) > tree.depth(best)) best = n;  // ties: first in order
  }
  Finish(node_tokens, best, argmax(best));
  return &result_;
}

absl::StatusOr<const AcceptedPath*> Acceptor::AcceptGreedy(absl::Span<const int32_t> node_tokens,
                                                           absl::Span<const float> logits) {
  RETURN_IF_ERROR(CheckSizes(node_tokens, logits));
  std::fill(argmax_.begin(), argmax_.end(), -1);
  return GreedyPath(node_tokens, [&](int node) {
    if (argmax_[node] < 0) argmax_[node] = kernels::Argmax(Row(logits, node));
    return argmax_[node];
  });
}

absl::StatusOr<const AcceptedPath*> Acceptor::AcceptGreedy(absl::Span<const int32_t> node_tokens,
                                                           absl::Span<const int32_t> argmax) {
  const MedusaTree& tree = *tree_;
  if (node_tokens.size() != static_cast<size_t>(tree.num_nodes()) || argmax.size() != node_tokens.size()) {
    return absl::InvalidArgumentError(absl::StrCat("greedy acceptance: ", tree.num_nodes(), " nodes, got ",
                                                   node_tokens.size(), " tokens and ", argmax.size(),
                                                   " greedy tokens"));
  }
  for (size_t n = 0; n < argmax.size(); ++n) {
    if (argmax[n] < 0 || argmax[n] >= vocab_) {
      return absl::InvalidArgumentError(
          absl::StrCat("greedy token ", argmax[n], " of node ", n, " is outside the vocabulary"));
    }
  }
  return GreedyPath(node_tokens, [&](int node) { return argmax[node]; });
}

template <typename StatsOf, typename ChildLogit>
int Acceptor::TypicalBest(double temperature, StatsOf stats_of, ChildLogit child_logit) {
  const MedusaTree& tree = *tree_;
  accepted_[0] = 1;
  likelihood_[0] = 0.0;
  int best = 0;
  for (int n = 1; n < tree.num_nodes(); ++n) {
    const int p = tree.parent(n);
    accepted_[n] = 0;
    if (!accepted_[p]) continue;
    const TypicalRowStats& stats = stats_of(p);
    const double log_p = TypicalLogProb(stats, child_logit(n), temperature);
    if (!(std::exp(log_p) > stats.threshold)) continue;
    accepted_[n] = 1;
    likelihood_[n] = likelihood_[p] + log_p;
    // Longest; then most likely; then first in tree order.
    if (tree.depth(n) > tree.depth(best) ||
        (tree.depth(n) == tree.depth(best) && likelihood_[n] > likelihood_[best])) {
      best = n;
    }
  }
  return best;
}

absl::StatusOr<const AcceptedPath*> Acceptor::AcceptTypical(absl::Span<const int32_t> node_tokens,
                                                            absl::Span<const float> logits, Sampler& sampler) {
  if (sampler.params().greedy()) return AcceptGreedy(node_tokens, logits);
  RETURN_IF_ERROR(CheckSizes(node_tokens, logits));
  const double temperature = sampler.params().temperature;
  std::fill(stats_ready_.begin(), stats_ready_.end(), 0);
  const int best = TypicalBest(
      temperature,
      [&](int p) -> const TypicalRowStats& {
        return CachedStats(p, [&] { return ComputeTypicalRowStats(Row(logits, p), temperature, options_); });
      },
      [&](int n) { return Row(logits, tree_->parent(n))[node_tokens[n]]; });
  Finish(node_tokens, best, sampler.Sample(Row(logits, best)));
  return &result_;
}

absl::StatusOr<const AcceptedPath*> Acceptor::AcceptTypical(absl::Span<const int32_t> node_tokens,
                                                            absl::Span<const kernels::SoftmaxStats> row_stats,
                                                            absl::Span<const float> child_logits,
                                                            const RowReader& row_of, Sampler& sampler) {
  const size_t n = tree_->num_nodes();
  if (sampler.params().greedy()) {
    return absl::InvalidArgumentError("typical acceptance from row statistics needs a sampling temperature");
  }
  if (node_tokens.size() != n || row_stats.size() != n || child_logits.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("typical acceptance: ", n, " nodes, got ", node_tokens.size(),
                                                   " tokens, ", row_stats.size(), " row statistics and ",
                                                   child_logits.size(), " logits"));
  }
  const double temperature = sampler.params().temperature;
  std::fill(stats_ready_.begin(), stats_ready_.end(), 0);
  const int best = TypicalBest(
      temperature,
      [&](int p) -> const TypicalRowStats& {
        return CachedStats(p, [&] { return TypicalStatsOf(row_stats[p], options_); });
      },
      [&](int node) { return child_logits[node]; });
  ASSIGN_OR_RETURN(const absl::Span<const float> row, row_of(best));
  if (row.size() != static_cast<size_t>(vocab_)) {
    return absl::InternalError(absl::StrCat("typical acceptance: row ", best, " has ", row.size(), " logits"));
  }
  Finish(node_tokens, best, sampler.Sample(row));
  return &result_;
}

absl::StatusOr<const AcceptedPath*> Acceptor::AcceptRejection(absl::Span<const int32_t> node_tokens,
                                                              absl::Span<const float> logits,
                                                              Sampler& sampler) {
  if (sampler.params().greedy()) return AcceptGreedy(node_tokens, logits);
  RETURN_IF_ERROR(CheckSizes(node_tokens, logits));
  const MedusaTree& tree = *tree_;
  int node = 0;
  for (;;) {
    sampler.Distribution(Row(logits, node), &target_);
    double left = 1.0;  // probability mass of target_ not yet rejected
    int next = -1;
    for (int child : tree.children(node)) {
      const double q = target_[node_tokens[child]];
      if (sampler.Uniform() * left < q) {
        next = child;
        break;
      }
      left -= q;
      target_[node_tokens[child]] = 0.0f;
    }
    if (next < 0) break;
    node = next;
  }
  Finish(node_tokens, node, SampleResidual(sampler, Row(logits, node)));
  return &result_;
}

int32_t Acceptor::SampleResidual(Sampler& sampler, absl::Span<const float> row) {
  double left = 0.0;
  for (float q : target_) left += q;
  if (left > 0.0) {
    const double r = sampler.Uniform() * left;
    double cumulative = 0.0;
    int32_t last = -1;
    for (size_t x = 0; x < target_.size(); ++x) {
      if (target_[x] <= 0.0f) continue;
      cumulative += target_[x];
      last = static_cast<int32_t>(x);
      if (r < cumulative) return last;
    }
    return last;  // rounding left r just above the total
  }
  // Every kept token was tried and rejected: only float rounding gets here (the last
  // candidate holding all the mass left is accepted with probability 1).
  return Argmax(row);
}

absl::StatusOr<const AcceptedPath*> Acceptor::Accept(absl::Span<const int32_t> node_tokens,
                                                     absl::Span<const float> logits,
                                                     Sampler& sampler) {
  if (sampler.params().greedy()) return AcceptGreedy(node_tokens, logits);
  return options_.rule == SamplingAcceptance::kRejection ? AcceptRejection(node_tokens, logits, sampler)
                                                         : AcceptTypical(node_tokens, logits, sampler);
}

}  // namespace medusa
