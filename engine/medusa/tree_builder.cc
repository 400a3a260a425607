#include "engine/medusa/tree_builder.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

// Probabilities that differ by less than this (relative) are ties, so products taken
// in different orders (a*b*c vs a*c*b) do not decide the greedy order by rounding.
constexpr double kTieSlack = 1e-12;

// The reference's node order: by depth, then lexicographically.
struct TreeOrderLess {
  bool operator()(const std::vector<int>& a, const std::vector<int>& b) const {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  }
};

// Ranks the greedy search may use at depth d (1-based): head d-1's measured ranks, at most 10.
int RanksAtDepth(const Calibration& calibration, int depth) {
  return std::min(kGreedyMaxRank, calibration.num_ranks(depth - 1));
}

int DepthLimit(const Calibration& calibration, int max_depth) {
  const int heads = std::min(calibration.num_heads(), MedusaTree::kMaxDepth);
  return max_depth > 0 ? std::min(max_depth, heads) : heads;
}

}  // namespace

double GreedyTree::expected_acceleration(int nodes) const {
  const size_t n = nodes < 0 ? probabilities.size() : std::min<size_t>(nodes, probabilities.size());
  double sum = 1.0;
  for (size_t i = 0; i < n; ++i) sum += probabilities[i];
  return sum;
}

GreedyTree GreedyTree::Prefix(int nodes) const {
  const size_t n = std::min<size_t>(std::max(nodes, 0), paths.size());
  return GreedyTree{{paths.begin(), paths.begin() + n}, {probabilities.begin(), probabilities.begin() + n}};
}

nlohmann::json GreedyTree::ToJson() const {
  std::vector<size_t> order(paths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return TreeOrderLess()(paths[a], paths[b]); });
  nlohmann::json sorted_paths = nlohmann::json::array(), sorted_probabilities = nlohmann::json::array();
  for (size_t i : order) {
    sorted_paths.push_back(paths[i]);
    sorted_probabilities.push_back(probabilities[i]);
  }
  return {{"paths", sorted_paths},
          {"expected_acceleration", expected_acceleration()},
          {"nodes", nodes()},
          {"probabilities", sorted_probabilities}};
}

int MaxGreedyNodes(const Calibration& calibration, int max_depth) {
  const int depth_limit = DepthLimit(calibration, max_depth);
  // Nodes at depth d: the product of the ranks at depths 1..d. Capped past the path limit.
  int64_t total = 0, level = 1;
  for (int d = 1; d <= depth_limit && total <= MedusaTree::kMaxPaths; ++d) {
    level = std::min<int64_t>(level * RanksAtDepth(calibration, d), MedusaTree::kMaxPaths + 1);
    total += level;
  }
  return static_cast<int>(std::min<int64_t>(total, MedusaTree::kMaxPaths + 1));
}

absl::StatusOr<GreedyTree> BuildGreedyTree(const Calibration& calibration, int nodes, int max_depth) {
  if (calibration.num_heads() == 0) return absl::InvalidArgumentError("calibration has no heads");
  const int depth_limit = DepthLimit(calibration, max_depth);
  const int possible = MaxGreedyNodes(calibration, max_depth);
  if (nodes < 0 || nodes > std::min(possible, MedusaTree::kMaxPaths)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a greedy tree of ", nodes, " nodes is not possible: ",
        possible > MedusaTree::kMaxPaths
            ? absl::StrCat("trees have at most ", MedusaTree::kMaxPaths, " nodes besides the root")
            : absl::StrCat(depth_limit, " head(s) with their calibrated ranks (at most ", kGreedyMaxRank,
                           " each) allow at most ", possible, " nodes besides the root")));
  }
  // Candidates (children of tree nodes) with their probabilities, in tree order so that
  // scanning them finds the tie-break winner first.
  std::map<std::vector<int>, double, TreeOrderLess> candidates;
  auto add_children = [&](const std::vector<int>& parent, double parent_probability) {
    const int depth = static_cast<int>(parent.size()) + 1;
    if (depth > depth_limit) return;
    std::vector<int> child = parent;
    child.push_back(0);
    for (int r = 0; r < RanksAtDepth(calibration, depth); ++r) {
      child.back() = r;
      candidates.emplace(child, parent_probability * calibration.rank_accuracy(depth - 1, r));
    }
  };
  GreedyTree tree;
  add_children({}, 1.0);
  while (tree.nodes() < nodes) {
    auto best = candidates.begin();
    for (auto it = candidates.begin(); it != candidates.end(); ++it) {
      if (it->second > best->second * (1.0 + kTieSlack)) best = it;
    }
    tree.paths.push_back(best->first);
    tree.probabilities.push_back(best->second);
    candidates.erase(best);
    add_children(tree.paths.back(), tree.probabilities.back());
  }
  return tree;
}

int ChooseTreeIndex(absl::Span<const double> expected_speedup) {
  int best = -1;
  double best_speedup = 0.0;
  for (size_t i = 0; i < expected_speedup.size(); ++i) {
    if (expected_speedup[i] >= kMinTreeSpeedup && expected_speedup[i] > best_speedup) {
      best = static_cast<int>(i);
      best_speedup = expected_speedup[i];
    }
  }
  return best;
}

}  // namespace medusa
