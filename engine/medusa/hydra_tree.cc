#include "engine/medusa/hydra_tree.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace medusa {

HydraTreeBuilder::HydraTreeBuilder(const HydraTreeOptions& options, int32_t root) : options_(options) {
  nodes_.push_back({-1, 0, -1, root, 1.0});
  if (options_.budget > 0 && options_.max_depth > 0 && options_.topk > 0 && options_.expand_width > 0) {
    frontier_.push_back(0);
  }
}

std::vector<int32_t> HydraTreeBuilder::PathTokens(int node) const {
  std::vector<int32_t> tokens;
  for (int n = node; n >= 0; n = nodes_[n].parent) tokens.push_back(nodes_[n].token);
  std::reverse(tokens.begin(), tokens.end());
  return tokens;
}

absl::Status HydraTreeBuilder::AddChildren(int node, absl::Span<const int32_t> ids,
                                           absl::Span<const double> probability) {
  if (std::find(frontier_.begin(), frontier_.end(), node) == frontier_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("node ", node, " is not on the frontier"));
  }
  if (ids.size() != probability.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ids.size(), " proposals with ", probability.size(), " probabilities"));
  }
  // A child ranked r among its siblings is kept only with its r better siblings and the node's
  // own path (depth nodes, the root aside): a rank past budget - depth - 1 never is.
  const int count = std::min({static_cast<int>(ids.size()), options_.topk, options_.budget - nodes_[node].depth});
  for (int r = 0; r < count; ++r) {
    last_.push_back(static_cast<int>(nodes_.size()));
    nodes_.push_back({node, nodes_[node].depth + 1, r, ids[r], nodes_[node].estimate * probability[r]});
  }
  return absl::OkStatus();
}

// Node order for keeping: larger estimate, then shallower, then earlier (so a parent, never
// less likely than its child, always comes first).
std::vector<int> HydraTreeBuilder::Kept() const {
  std::vector<int> order(nodes_.size() - 1);
  std::iota(order.begin(), order.end(), 1);
  const int keep = std::min(options_.budget, static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int a, int b) {
    if (nodes_[a].estimate != nodes_[b].estimate) return nodes_[a].estimate > nodes_[b].estimate;
    if (nodes_[a].depth != nodes_[b].depth) return nodes_[a].depth < nodes_[b].depth;
    return a < b;
  });
  order.resize(keep);
  return order;
}

void HydraTreeBuilder::Advance() {
  ++depth_;
  frontier_.clear();
  std::vector<int> last = std::move(last_);
  last_.clear();
  // Children at depth_ + 1 need that many kept nodes on their path: none past the budget.
  if (depth_ >= options_.max_depth || depth_ >= options_.budget || last.empty()) return;
  // Children of a node outside the budget best so far could never be kept.
  const std::vector<int> kept = Kept();
  const bool full = static_cast<int>(kept.size()) >= options_.budget;
  std::vector<int> candidates;
  for (int node : last) {
    if (!full || std::find(kept.begin(), kept.end(), node) != kept.end()) candidates.push_back(node);
  }
  const int width = std::min(options_.expand_width, static_cast<int>(candidates.size()));
  std::partial_sort(candidates.begin(), candidates.begin() + width, candidates.end(), [&](int a, int b) {
    return nodes_[a].estimate > nodes_[b].estimate || (nodes_[a].estimate == nodes_[b].estimate && a < b);
  });
  frontier_.assign(candidates.begin(), candidates.begin() + width);
}

std::vector<std::vector<int>> HydraTreeBuilder::Paths() const {
  std::vector<std::vector<int>> paths;
  for (int node : Kept()) {
    std::vector<int> path;
    for (int n = node; n > 0; n = nodes_[n].parent) path.push_back(nodes_[n].rank);
    std::reverse(path.begin(), path.end());
    paths.push_back(std::move(path));
  }
  return paths;
}

std::vector<int32_t> HydraTreeBuilder::Tokens() const {
  std::vector<int32_t> tokens;
  for (int node : Kept()) tokens.push_back(nodes_[node].token);
  return tokens;
}

}  // namespace medusa
