#pragma once
// The sparse candidate tree of Medusa decoding (the reference implementation's
// "medusa_choices"), built once and reused every step.
//
// A tree is a list of paths. Path [i0, i1, ...] is the candidate made of head 0's
// top-(i0+1) token, then head 1's top-(i1+1) token, and so on; every prefix of a path
// must be a path too. Node 0 is the root: the token the base model chose at the end of
// the previous step. The other nodes are the paths, sorted by (depth, path) as in the
// reference (`sorted(choices, key=lambda x: (len(x), x))`), so parents come before
// their children and node indices are stable for a given set of paths.
//
// Each step all nodes are verified in one forward pass: node n sits at position
// (context length + depth(n)) and attends to the context, the root, its ancestors and
// itself (tree attention).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace medusa {

class MedusaTree {
 public:
  // Bounds far above any useful tree (the reference's have 63 nodes and ranks < 10);
  // they bound the dense mask (n^2 bytes) and the top-k buffers.
  static constexpr int kMaxPaths = 2048;
  static constexpr int kMaxRank = 1023;
  static constexpr int kMaxDepth = 64;

  // A tree with only the root (plain decoding).
  MedusaTree();

  // Validates and builds. InvalidArgument (naming the path and its position in the
  // list) for an empty path, a negative or too large rank, a path deeper than
  // `num_heads` (the heads available; <= 0: no limit but kMaxDepth), a duplicate path, or a
  // path whose prefix is missing.
  static absl::StatusOr<MedusaTree> FromPaths(const std::vector<std::vector<int>>& paths,
                                              int num_heads);
  // A single chain of depth d: [[0], [0, 0], ..., [0 x d]] (top-1 of each head).
  static MedusaTree Chain(int depth);
  // The same tree without the paths deeper than max_depth (the heads the loaded
  // checkpoint has). Prefixes are kept, so the result is valid.
  MedusaTree TruncateToDepth(int max_depth) const;

  int num_nodes() const { return static_cast<int>(depth_.size()); }  // root included
  int max_depth() const { return max_depth_; }  // 0 for the root alone
  // Heads the tree uses: head h proposes the tokens at depth h + 1.
  int num_heads_used() const { return max_depth_; }
  // Sorted paths (nodes 1..n-1 in order), for printing and saving.
  std::vector<std::vector<int>> paths() const;

  // Per node (0 = root).
  int depth(int node) const { return depth_[node]; }
  int head(int node) const { return depth_[node] - 1; }  // -1 for the root
  int rank(int node) const { return rank_[node]; }        // -1 for the root
  int parent(int node) const { return parent_[node]; }    // -1 for the root
  // RoPE position relative to the root's: the depth.
  int position_offset(int node) const { return depth_[node]; }
  absl::Span<const int> path(int node) const;  // ranks from the root ({} for the root)
  // The nodes `node` attends to inside the tree: the root, its ancestors and itself,
  // in increasing index order (= increasing depth).
  absl::Span<const int> ancestors(int node) const;
  absl::Span<const int> children(int node) const;  // increasing index order
  bool is_leaf(int node) const { return children(node).empty(); }
  // Whether `query` attends to `key`.
  bool Attends(int query, int key) const { return mask_[query * num_nodes() + key] != 0; }
  // Dense [num_nodes, num_nodes] attention mask, row = query, 1 = attends.
  const std::vector<uint8_t>& mask() const { return mask_; }

  // Retrieval paths: for each leaf (in increasing node order), the node indices from
  // the root to it, root included.
  int num_leaves() const { return static_cast<int>(leaves_.size()); }
  int leaf(int i) const { return leaves_[i]; }
  absl::Span<const int> retrieval_path(int i) const { return ancestors(leaves_[i]); }
  // The reference's retrieve_indices: [num_leaves, max_depth + 1], each row a retrieval
  // path padded with -1.
  std::vector<int> RetrieveIndices() const;

  // Top-k each head must supply: 1 + the largest rank among nodes of that head
  // (h < num_heads_used()).
  int topk(int head) const { return topk_[head]; }
  absl::Span<const int> topk_per_head() const { return topk_; }

 private:
  void Build(std::vector<std::vector<int>> sorted_paths);

  int max_depth_ = 0;
  std::vector<int> depth_, rank_, parent_;
  std::vector<int> path_begin_, path_data_;            // CSR: path(n) (begin has n+1 entries)
  std::vector<int> ancestor_begin_, ancestor_data_;    // CSR: ancestors(n)
  std::vector<int> child_begin_, child_data_;          // CSR: children(n)
  std::vector<uint8_t> mask_;
  std::vector<int> leaves_;
  std::vector<int> topk_;
};

// Names of the built-in presets ("default" first, then the reference's in its order).
std::vector<std::string> TreePresetNames();
// A preset's paths ("default" is mc_sim_7b_63); NotFound for an unknown name.
absl::StatusOr<std::vector<std::vector<int>>> TreePresetPaths(const std::string& name);

// Parses tree paths from JSON text: a list of lists of non-negative ints, or an object
// whose "paths" (or "medusa_choices") member is one. InvalidArgument naming the
// element otherwise. `source` names the input in messages.
absl::StatusOr<std::vector<std::vector<int>>> ParseTreePaths(const std::string& json_text,
                                                             const std::string& source);

// The tree the user asked for, for `num_heads` loaded heads (>= 1):
//  - "chain": the top-1 token of every head, one node per head;
//  - a preset name ("default", "mc_sim_7b_63", ...): cut to num_heads levels (presets
//    are written for 4-5 heads; fewer heads simply use the top of the tree);
//  - otherwise a JSON file of paths (ParseTreePaths), validated strictly: a path deeper
//    than num_heads is an error, since the user wrote it for other heads;
//  - "auto": FailedPrecondition here, since the auto tree belongs to a heads file:
//    Engine::Create resolves it from AutoTreePathFor(heads) (engine/medusa/tree_builder.h).
// NotFound when the name is neither a preset nor an existing file.
absl::StatusOr<MedusaTree> LoadTree(const std::string& name_or_path, int num_heads);

}  // namespace medusa
