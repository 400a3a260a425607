#include "engine/medusa/acceptance.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace medusa {

namespace {

// e^x for x <= 0, in float with a relative error below 2e-7, written without calls or
// branches so that loops over it vectorize (std::exp does not, and a vocabulary row
// takes one per entry). x is clamped to -87 (NaN included), where e^x ~ 1.6e-38 is
// already negligible next to the row's maximum, which contributes e^0 = 1.
inline float ExpNonPositive(float x) {
  x = x > -87.0f ? x : -87.0f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x * kLog2e + kRound;
  const float n = shifted - kRound;  // x / ln 2, rounded
  const int32_t n_int = std::bit_cast<int32_t>(shifted) - std::bit_cast<int32_t>(kRound);
  // r = x - n ln 2 (|r| <= 0.35), with ln 2 split in two for precision (Cody-Waite).
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // Taylor series to r^6: the r^7 term is below 1.3e-7 relative.
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
                                                                      r * (1.0f / 720))))));
  return std::bit_cast<float>(std::bit_cast<int32_t>(p) + (n_int << 23));  // p * 2^n
}

// Largest value of data[0, n), NaN skipped (-inf for none). Written as a ternary, not
// std::max: GCC vectorizes this form into vmaxps and the std::max form 8x slower.
inline float MaxOf(const float* data, int n) {
  float best = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : best)
  for (int i = 0; i < n; ++i) best = data[i] > best ? data[i] : best;
  return best;
}

// Index of the largest value, the first on ties: the same answer as Argmax (the
// sampler's, used by plain decoding) for rows without NaN. Block maxima are vectorized;
// only the first block reaching the maximum is scanned for its position.
int32_t FastArgmax(absl::Span<const float> row) {
  constexpr int kBlock = 256;
  const float* data = row.data();
  const int n = static_cast<int>(row.size());
  float best = -std::numeric_limits<float>::infinity();
  int best_block = 0;
  for (int b = 0; b < n; b += kBlock) {
    const float m = MaxOf(data + b, std::min(kBlock, n - b));
    if (m > best) {  // strictly: the earliest block holding the maximum wins
      best = m;
      best_block = b;
    }
  }
  for (int i = best_block; i < n; ++i) {
    if (data[i] == best) return i;
  }
  return 0;  // nothing above -inf
}

}  // namespace

TypicalRowStats ComputeTypicalRowStats(absl::Span<const float> row, double temperature,
                                       const AcceptanceOptions& options) {
  TypicalRowStats stats;
  const float* data = row.data();
  const int n = static_cast<int>(row.size());
  const float max_logit = MaxOf(data, n);
  stats.max_logit = max_logit;
  if (!std::isfinite(max_logit)) {
    stats.log_z = std::numeric_limits<double>::infinity();
    stats.threshold = std::numeric_limits<double>::infinity();
    return stats;
  }
  // One pass: Z = sum e^x and sum x e^x with x = (l - max) / T <= 0; then
  // H = -sum p log p = log Z - (sum x e^x) / Z. Entries at -inf (or NaN) add nothing
  // (x is clamped, so x e^x stays finite and negligible).
  const float inv_t = static_cast<float>(1.0 / temperature);
  double sum_e = 0.0;
  double sum_xe = 0.0;
#pragma omp simd reduction(+ : sum_e, sum_xe)
  for (int i = 0; i < n; ++i) {
    float x = (data[i] - max_logit) * inv_t;
    x = x > -87.0f ? x : -87.0f;
    const float e = ExpNonPositive(x);
    sum_e += e;
    sum_xe += x * e;
  }
  stats.log_z = std::log(sum_e);
  stats.entropy = std::max(0.0, stats.log_z - sum_xe / sum_e);
  stats.threshold = std::min<double>(options.epsilon, options.delta * std::exp(-stats.entropy));
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
    if (argmax_[node] < 0) argmax_[node] = FastArgmax(Row(logits, node));
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

absl::StatusOr<const AcceptedPath*> Acceptor::AcceptTypical(absl::Span<const int32_t> node_tokens,
                                                            absl::Span<const float> logits,
                                                            Sampler& sampler) {
  if (sampler.params().greedy()) return AcceptGreedy(node_tokens, logits);
  RETURN_IF_ERROR(CheckSizes(node_tokens, logits));
  const MedusaTree& tree = *tree_;
  const double temperature = sampler.params().temperature;
  std::fill(stats_ready_.begin(), stats_ready_.end(), 0);
  accepted_[0] = 1;
  likelihood_[0] = 0.0;
  int best = 0;
  for (int n = 1; n < tree.num_nodes(); ++n) {
    const int p = tree.parent(n);
    accepted_[n] = 0;
    if (!accepted_[p]) continue;
    if (!stats_ready_[p]) {
      stats_[p] = ComputeTypicalRowStats(Row(logits, p), temperature, options_);
      stats_ready_[p] = 1;
    }
    const double log_p =
        TypicalLogProb(stats_[p], Row(logits, p)[node_tokens[n]], temperature);
    if (!(std::exp(log_p) > stats_[p].threshold)) continue;
    accepted_[n] = 1;
    likelihood_[n] = likelihood_[p] + log_p;
    // Longest; then most likely; then first in tree order.
    if (tree.depth(n) > tree.depth(best) ||
        (tree.depth(n) == tree.depth(best) && likelihood_[n] > likelihood_[best])) {
      best = n;
    }
  }
  Finish(node_tokens, best, sampler.Sample(Row(logits, best)));
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
