#include "engine/medusa/dynamic_tree.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace medusa {

absl::StatusOr<HeadProposals> ProposalsFromLogits(absl::Span<const float> head_logits, int width,
                                                  absl::Span<const int32_t> draft_vocab, absl::Span<const int> topk,
                                                  absl::Span<const double> temperature) {
  const size_t heads = topk.size();
  if (width < 1 || head_logits.size() < heads * width) {
    return absl::InvalidArgumentError(
        absl::StrCat("head logits hold ", head_logits.size(), " values; ", heads, " heads of ", width, " are needed"));
  }
  if (!draft_vocab.empty() && draft_vocab.size() != static_cast<size_t>(width)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a draft vocabulary of ", draft_vocab.size(), " tokens for head rows of ", width));
  }
  HeadProposals proposals;
  proposals.ids.resize(heads);
  proposals.probability.resize(heads);
  std::vector<int> order(width);
  for (size_t h = 0; h < heads; ++h) {
    if (topk[h] < 1 || topk[h] > width) {
      return absl::InvalidArgumentError(absl::StrCat("head ", h, " asked for ", topk[h], " of ", width, " tokens"));
    }
    const float* z = head_logits.data() + h * width;
    const double inv = 1.0 / (h < temperature.size() ? temperature[h] : 1.0);
    std::iota(order.begin(), order.end(), 0);
    // Best first; equal logits by index, as the backends' top-k order them.
    std::partial_sort(order.begin(), order.begin() + topk[h], order.end(),
                      [&](int a, int b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
    const double top = z[order[0]];
    double total = 0.0;
    for (int i = 0; i < width; ++i) total += std::exp((z[i] - top) * inv);
    for (int r = 0; r < topk[h]; ++r) {
      const int i = order[r];
      proposals.ids[h].push_back(draft_vocab.empty() ? i : draft_vocab[i]);
      proposals.probability[h].push_back(std::exp((z[i] - top) * inv) / total);
    }
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
