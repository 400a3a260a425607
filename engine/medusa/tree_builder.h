#pragma once
// Medusa trees fitted to measured head accuracies (calibration.h): the paper's "optimized
// tree construction" (Cai et al. 2024, section 3.3.4).
//
// Calibration gives, for each head k, the fraction of positions where the true token
// was within its top-1, top-2, ... top-10 guesses. The chance that rank i (0-based)
// is the right one is then a[k][i] = top(i+1) - top(i) (a[k][0] = top-1). A tree node
// is a path of ranks (r_1 .. r_d); it is accepted only when every prefix is, so its
// acceptance probability is the product of a[j-1][r_j] over its depths j, assuming
// heads are right independently. A tree's expected accepted length is the sum of its
// nodes' probabilities, and its expected acceleration (tokens per step) 1 + that.
// Greedy construction adds, one at a time, the node of highest probability whose
// parent is already in the tree; each tree it passes through is the best of its size
// under that model.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/medusa/calibration.h"
#include "engine/medusa/tree.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

// A tree grown greedily: paths in the order they were added (every prefix of a path
// comes before it), with their acceptance probabilities.
struct GreedyTree {
  std::vector<std::vector<int>> paths;
  std::vector<double> probabilities;  // acceptance probability of each path

  int nodes() const { return static_cast<int>(paths.size()); }  // root not counted
  // 1 + the sum of the first `nodes` paths' probabilities (all when nodes < 0).
  double expected_acceleration(int nodes = -1) const;
  // The tree of the first `nodes` paths (a tree: greedy order keeps prefixes first),
  // clamped to [0, nodes()].
  GreedyTree Prefix(int nodes) const;
  // {"paths": [...] in tree order, "expected_acceleration": x, "nodes": N,
  //  "probabilities": [...] beside the paths} (tree.cc's ParseTreePaths reads it back).
  nlohmann::json ToJson() const;
};

// Ranks the greedy search considers per head (the calibration's top-10).
inline constexpr int kGreedyMaxRank = 10;

// Grows a tree of `nodes` nodes besides the root: each step adds the candidate of
// highest probability (ties go to the shallower, then lexicographically smaller path),
// where candidates are children of tree nodes at depth <= max_depth with rank <
// min(kGreedyMaxRank, that head's measured ranks). `max_depth` <= 0 means every
// calibrated head; otherwise min(max_depth, heads). InvalidArgument when `nodes` is
// negative, above MedusaTree::kMaxPaths, or more than such trees can hold.
absl::StatusOr<GreedyTree> BuildGreedyTree(const Calibration& calibration, int nodes,
                                           int max_depth = 0);
// The most nodes a greedy tree can have for this calibration and depth limit.
int MaxGreedyNodes(const Calibration& calibration, int max_depth = 0);

// How much a tree's expected speedup must beat plain decoding by to be chosen. The expectation
// is two measurements' ratio: acceptance from held-out calibration prompts, which served prompts
// missed by about 5% (SmolLM2 on its Q4_1 file: 1.27 expected tokens per step, 1.20 to 1.26
// served), and step times good to a few percent on a shared machine. Within that margin a tree
// measured 1.04x expected ran 0.89x to 1.01x end to end; plain decoding risks nothing.
constexpr double kMinTreeSpeedup = 1.05;

// Which measured tree to use: the index in `expected_speedup` (expected acceleration
// over measured step overhead, one per candidate tree) of the largest value of at least
// kMinTreeSpeedup, or -1 (plain decoding) when none reaches it. Ties go to the earlier
// (smaller) tree.
int ChooseTreeIndex(absl::Span<const double> expected_speedup);

}  // namespace medusa
