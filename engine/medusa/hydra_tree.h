#pragma once
// Draft trees of sequentially dependent (Hydra) heads, grown one depth at a time, as EAGLE-2
// grows its draft trees: head d proposes the children of a depth-d node given that node's own
// path, so the tree is known only as it grows. Each depth expands the most promising nodes of
// the last (by estimated path probability: the heads' calibrated probabilities multiplied
// along the path), and the step keeps the `budget` nodes of everything grown with the largest
// estimates. A child's estimate never exceeds its parent's, so the kept nodes form a tree.
//
// The caller evaluates the heads: Frontier() names the nodes to expand at the next depth,
// AddChildren() takes each one's proposals, until Frontier() is empty; then Paths() and
// Tokens() describe the kept tree (ranks as MedusaTree::FromPaths takes them: a node's rank is
// its place among the proposals of its parent).

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace medusa {

struct HydraTreeOptions {
  int budget = 0;        // draft nodes kept (the root excluded)
  int max_depth = 0;     // heads available
  int expand_width = 4;  // nodes expanded per depth at most
  int topk = 4;          // proposals taken per expanded node at most
};

class HydraTreeBuilder {
 public:
  // Starts a step's tree at `root` (the base model's token).
  HydraTreeBuilder(const HydraTreeOptions& options, int32_t root);

  // The depth the next expansion proposes for (its nodes' depth + 1 = the head's index + 1).
  int depth() const { return depth_; }
  // The nodes to expand next: of the last depth's nodes, at most expand_width with the
  // largest estimates that can still be kept (an estimate among the budget largest so far);
  // empty when the tree is done (no head left, the budget's depth reached, or nothing worth
  // expanding). Nothing that could never be kept is grown (no deeper than the budget, no child
  // ranked past what the budget can hold), so a head call is never spent on it.
  absl::Span<const int> Frontier() const { return frontier_; }
  // The tokens of `node`'s path from the root, root included (head d's input path).
  std::vector<int32_t> PathTokens(int node) const;
  // One frontier node's proposals, best first (ids and their probabilities); at most `topk`
  // are kept. Call once per frontier node, then Advance().
  absl::Status AddChildren(int node, absl::Span<const int32_t> ids, absl::Span<const double> probability);
  // Moves to the next depth: computes the next frontier from the children just added.
  void Advance();

  // The kept nodes (the budget best by estimate; ties to the shallower, then the earlier),
  // as rank paths and their tokens, parents before children.
  std::vector<std::vector<int>> Paths() const;
  std::vector<int32_t> Tokens() const;
  int num_grown() const { return static_cast<int>(nodes_.size()) - 1; }

 private:
  struct Node {
    int parent;
    int depth;
    int rank;
    int32_t token;
    double estimate;
  };
  std::vector<int> Kept() const;

  HydraTreeOptions options_;
  std::vector<Node> nodes_;  // node 0: the root
  std::vector<int> frontier_;
  std::vector<int> last_;  // the nodes added at the current depth
  int depth_ = 0;
};

}  // namespace medusa
