#pragma once
// The per-machine file of `medusa tree --auto` (HEADS.auto_tree.json), which `--tree auto`
// reads back: for each machine it was measured on, the tree chosen for each batch size.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/medusa/tree.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

// What `medusa tree --auto` measured for one tree size at one batch size: its step time over a
// plain step's, and the speedup it expected (tokens per step from the heads' accuracies over
// that overhead).
struct TreeCost {
  double overhead = 1.0;
  double expected_speedup = 1.0;
};

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
  // The costs measured at the batch size TreeForBatch(batch) takes its tree from ("measurements":
  // [{"batch_size", "nodes", "overhead", "expected_speedup"}, ...]), by draft node count; empty
  // when the file lists none (a hand-written choice).
  const std::map<int, TreeCost>& CostsForBatch(int batch) const;

 private:
  // The measured batch size TreeForBatch(batch) and CostsForBatch(batch) read.
  int MeasuredBatchFor(int batch) const;

  std::map<int, MedusaTree> choice_;  // batch size -> tree
  std::map<int, std::map<int, TreeCost>> costs_;  // batch size -> draft nodes -> cost
  std::string machine_id_;
};

// The auto-tree file `existing` (the text of one, or empty for none) with `measurement`
// (MeasureAutoTree's report) in place of any earlier measurement of the same machine:
// {"machines": [...]}, ordered by machine id. Other machines' measurements are kept when
// they were made for the same head accuracies ("topk_accuracy"), or for others from another
// calibration file ("calibration": another weight mode's); the others are stale (the heads
// changed), and their machine ids go to `dropped`. InvalidArgument when `existing` is not an
// auto-tree file.
absl::StatusOr<nlohmann::json> MergeAutoTreeMeasurement(const std::string& existing, const nlohmann::json& measurement,
                                                        std::vector<std::string>* dropped = nullptr);

// Whether `path` is such a file (JSON with "machines", or "choice" for one machine's).
bool IsAutoTreeFile(const std::string& path);

// Where `medusa tree --auto` writes its result for a heads file, and where
// `--tree auto` looks: the heads path without ".safetensors", plus ".auto_tree.json".
std::string AutoTreePathFor(const std::string& heads_path);

}  // namespace medusa
