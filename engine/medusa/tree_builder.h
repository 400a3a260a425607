#pragma once
// Medusa trees fitted to measured head accuracies (the paper's "optimized tree
// construction", Cai et al. 2024, section 3.3.4), and the per-batch-size choice
// of `medusa tree --auto` that `--tree auto` reads back.
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

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/medusa/tree.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

// Top-k accuracies of a set of heads, as `medusa train` / `medusa calibrate` write them:
//   {"heads": "<file>", "topk_accuracy": [[top1, top2, ..., top10], ...one list per head], ...}
// Other members are ignored.
struct Calibration {
  std::string heads;  // the heads file measured ("" when the JSON does not say)
  // [head][i]: fraction of positions whose true token was among the head's top i+1.
  std::vector<std::vector<double>> topk_accuracy;

  int num_heads() const { return static_cast<int>(topk_accuracy.size()); }
  // Ranks with a measured accuracy for `head`.
  int num_ranks(int head) const { return static_cast<int>(topk_accuracy[head].size()); }
  // Probability that `head`'s guess of rank `rank` (0-based) is the right token.
  double rank_accuracy(int head, int rank) const;
};

// Parses and checks a calibration: InvalidArgument naming the element for text that
// is not JSON, a missing or non-list "topk_accuracy", a head that is not a non-empty
// list of numbers, a value outside [0, 1], or top-k accuracies that decrease with k
// (they are cumulative). `source` names the input in messages.
absl::StatusOr<Calibration> ParseCalibration(const std::string& json_text, const std::string& source);
// Reads a calibration file; NotFound when it cannot be read.
absl::StatusOr<Calibration> LoadCalibration(const std::string& path);

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

// Which measured tree to use: the index in `expected_speedup` (expected acceleration
// over measured step overhead, one per candidate tree) of the largest value above 1,
// or -1 (plain decoding) when none beats 1. Ties go to the earlier (smaller) tree.
int ChooseTreeIndex(absl::Span<const double> expected_speedup);

// The trees `medusa tree --auto` chose, one per measured batch size.
//   {"machine": {"id": ...}, "choice": {"1": {"nodes": N, "paths": [...]}, "2": {...}, ...}, ...}
// "nodes": 0 with no paths means plain decoding was faster at that batch size. Timings
// do not travel between machines, so a file may hold one such measurement per machine:
//   {"machines": [measurement, measurement, ...]}
// (what `medusa tree --auto` writes: measuring on a second machine adds its own).
class AutoTree {
 public:
  // Parses the measurement made on `machine_id` (Backend::MachineId()): the entry whose
  // "machine" "id" equals it, else one that names no machine (a hand-written choice), else
  // the first; machine_id() says which was taken. Builds each tree for `num_heads` loaded
  // heads (strictly: a path deeper than that is an error). InvalidArgument naming the
  // batch size and field otherwise. `source` names the input in messages.
  static absl::StatusOr<AutoTree> Parse(const std::string& json_text, const std::string& source, int num_heads,
                                        const std::string& machine_id = "");
  // Reads `path`: NotFound, telling the user to run `medusa tree --auto`, when absent.
  static absl::StatusOr<AutoTree> Load(const std::string& path, int num_heads, const std::string& machine_id = "");

  // Measured batch sizes, increasing (at least one).
  std::vector<int> batch_sizes() const;
  // Backend::MachineId() of the machine that measured it ("machine": {"id"}); empty
  // when the file does not say (a hand-written choice).
  const std::string& machine_id() const { return machine_id_; }
  // The tree for `batch` running sequences: the choice of the smallest measured batch
  // size >= batch, else of the largest one (step overhead grows with the batch, so the
  // nearest larger measurement is the cautious one). Root-only means plain decoding.
  const MedusaTree& TreeForBatch(int batch) const;

 private:
  std::map<int, MedusaTree> choice_;  // batch size -> tree
  std::string machine_id_;
};

// The auto-tree file `existing` (the text of one, or empty for none) with `measurement`
// (MeasureAutoTree's report) in place of any earlier measurement of the same machine:
// {"machines": [...]}, ordered by machine id. Other machines' measurements are kept when
// they were made for the same head accuracies ("topk_accuracy"); the others are stale, and
// their machine ids go to `dropped`. InvalidArgument when `existing` is not an auto-tree file.
absl::StatusOr<nlohmann::json> MergeAutoTreeMeasurement(const std::string& existing, const nlohmann::json& measurement,
                                                        std::vector<std::string>* dropped = nullptr);

// Where `medusa tree --auto` writes its result for a heads file, and where
// `--tree auto` looks: the heads path without ".safetensors", plus ".auto_tree.json".
std::string AutoTreePathFor(const std::string& heads_path);
// Where `medusa train` and `medusa calibrate` write a heads file's calibration:
// the heads path without ".safetensors", plus ".calibration.json".
std::string CalibrationPathFor(const std::string& heads_path);

}  // namespace medusa
