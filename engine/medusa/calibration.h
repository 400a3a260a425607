#pragma once
// How often each Medusa head's guesses are right, as measured on held-out text: what
// trees are fitted to (tree_builder.h).

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace medusa {

// Top-k accuracies of a set of heads, as `medusa train` / `medusa calibrate` write them:
//   {"heads": "<file>", "topk_accuracy": [[top1, top2, ..., top10], ...one list per head], ...}
// Other members are ignored.
struct Calibration {
  std::string heads;  // the heads file measured ("" when the JSON does not say)
  // [head][i]: fraction of positions whose true token was among the head's top i+1.
  std::vector<std::vector<double>> topk_accuracy;
  // Per head: the temperature that calibrates its probabilities (`medusa calibrate`'s
  // temperature scaling); empty when the JSON has none (1 for every head).
  std::vector<double> temperature;

  int num_heads() const { return static_cast<int>(topk_accuracy.size()); }
  // Ranks with a measured accuracy for `head`.
  int num_ranks(int head) const { return static_cast<int>(topk_accuracy[head].size()); }
  // Probability that `head`'s guess of rank `rank` (0-based) is the right token.
  double rank_accuracy(int head, int rank) const;
};

// Parses and checks a calibration: InvalidArgument naming the element for text that
// is not JSON, a missing or non-list "topk_accuracy", a head that is not a non-empty
// list of numbers, a value outside [0, 1], or top-k accuracies that decrease with k
// (they are cumulative), or a "temperature" that is not a list of positive numbers, one per
// head. `source` names the input in messages.
absl::StatusOr<Calibration> ParseCalibration(const std::string& json_text, const std::string& source);
// Reads a calibration file; NotFound when it cannot be read.
absl::StatusOr<Calibration> LoadCalibration(const std::string& path);

// Where `medusa train` and `medusa calibrate` write a heads file's calibration:
// the heads path without ".safetensors", plus ".calibration.json".
std::string CalibrationPathFor(const std::string& heads_path);

}  // namespace medusa
