#include "engine/medusa/dynamic_tree.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/softmax_stats.h"

namespace medusa {

absl::Status RowProposals(absl::Span<const float> logits, absl::Span<const int32_t> draft_vocab, int k,
                          double temperature, kernels::TopK* selector, std::vector<int32_t>* ids,
                          std::vector<double>* probability) {
  const int width = static_cast<int>(logits.size());
  if (k < 1 || k > width) return absl::InvalidArgumentError(absl::StrCat("asked for ", k, " of ", width, " tokens"));
  if (!draft_vocab.empty() && draft_vocab.size() != logits.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a draft vocabulary of ", draft_vocab.size(), " tokens for head rows of ", width));
  }
  ids->resize(k);
  selector->Select(logits, absl::MakeSpan(*ids));  // best first; equal logits by index, as the backends order them
  // p_i = exp((z_i - max) / T - log_z), the normalizer summed with vectorized exponentials.
  const kernels::SoftmaxStats stats = kernels::TemperedSoftmaxStats(logits, temperature);
  probability->resize(k);
  for (int r = 0; r < k; ++r) {
    const float z = logits[(*ids)[r]];
    (*probability)[r] = std::isfinite(stats.log_z) ? std::exp((z - stats.max_logit) / temperature - stats.log_z) : 0.0;
    if (!draft_vocab.empty()) (*ids)[r] = draft_vocab[(*ids)[r]];
  }
  return absl::OkStatus();
}

absl::StatusOr<HeadProposals> ProposalsFromLogits(absl::Span<const float> head_logits, int width,
                                                  absl::Span<const int32_t> draft_vocab, absl::Span<const int> topk,
                                                  absl::Span<const double> temperature) {
  const size_t heads = topk.size();
  if (width < 1 || head_logits.size() < heads * width) {
    return absl::InvalidArgumentError(
        absl::StrCat("head logits hold ", head_logits.size(), " values; ", heads, " heads of ", width, " are needed"));
  }
  HeadProposals proposals;
  proposals.ids.resize(heads);
  proposals.probability.resize(heads);
  kernels::TopK selector;
  for (size_t h = 0; h < heads; ++h) {
    const absl::Status status = RowProposals(head_logits.subspan(h * width, width), draft_vocab, topk[h],
                                             h < temperature.size() ? temperature[h] : 1.0, &selector,
                                             &proposals.ids[h], &proposals.probability[h]);
    if (!status.ok()) return absl::InvalidArgumentError(absl::StrCat("head ", h, ": ", status.message()));
  }
  return proposals;
}

std::vector<std::vector<int>> ChooseDynamicPaths(const MedusaTree& envelope, const HeadProposals& proposals,
                                                 int budget) {
  const int n = envelope.num_nodes();
  std::vector<double> estimate(n, 1.0);
  for (int node = 1; node < n; ++node) {  // parents come before their children
    const int h = envelope.head(node), r = envelope.rank(node);
    const bool known =
        h < static_cast<int>(proposals.probability.size()) && r < static_cast<int>(proposals.probability[h].size());
    estimate[node] = estimate[envelope.parent(node)] * (known ? proposals.probability[h][r] : 0.0);
  }
  std::vector<int> nodes(n - 1);
  std::iota(nodes.begin(), nodes.end(), 1);
  const int keep = std::clamp(budget, 0, n - 1);
  std::partial_sort(nodes.begin(), nodes.begin() + keep, nodes.end(), [&](int a, int b) {
    if (estimate[a] != estimate[b]) return estimate[a] > estimate[b];
    if (envelope.depth(a) != envelope.depth(b)) return envelope.depth(a) < envelope.depth(b);
    return a < b;
  });
  std::vector<std::vector<int>> paths;
  for (int i = 0; i < keep; ++i) {
    const absl::Span<const int> path = envelope.path(nodes[i]);
    paths.emplace_back(path.begin(), path.end());
  }
  return paths;
}

}  // namespace medusa
