#include "engine/medusa/tree_builder.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

// Cumulative accuracies written as count / total may wobble in the last bits when a
// tool rounds them; a drop smaller than this is read as equal.
constexpr double kMonotoneSlack = 1e-9;

// Probabilities that differ by less than this (relative) are ties, so products taken
// in different orders (a*b*c vs a*c*b) do not decide the greedy order by rounding.
constexpr double kTieSlack = 1e-12;

// The reference's node order: by depth, then lexicographically.
struct TreeOrderLess {
  bool operator()(const std::vector<int>& a, const std::vector<int>& b) const {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  }
};

absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " '", path, "'"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Ranks the greedy search may use at depth d (1-based): head d-1's measured ranks, at most 10.
int RanksAtDepth(const Calibration& calibration, int depth) {
  return std::min(kGreedyMaxRank, calibration.num_ranks(depth - 1));
}

int DepthLimit(const Calibration& calibration, int max_depth) {
  const int heads = std::min(calibration.num_heads(), MedusaTree::kMaxDepth);
  return max_depth > 0 ? std::min(max_depth, heads) : heads;
}

}  // namespace

double Calibration::rank_accuracy(int head, int rank) const {
  const std::vector<double>& top = topk_accuracy[head];
  if (rank < 0 || rank >= static_cast<int>(top.size())) return 0.0;
  const double below = rank == 0 ? 0.0 : top[rank - 1];
  return std::max(0.0, top[rank] - below);  // a slack-sized drop counts as 0
}

absl::StatusOr<Calibration> ParseCalibration(const std::string& json_text, const std::string& source) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("calibration '", source, "': ", what));
  };
  const nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return bad("not valid JSON");
  if (!doc.is_object()) return bad("expected a JSON object with \"topk_accuracy\"");
  Calibration calibration;
  if (doc.contains("heads")) {
    if (!doc["heads"].is_string()) return bad(absl::StrCat("\"heads\" must be a string, got ", doc["heads"].dump()));
    calibration.heads = doc["heads"].get<std::string>();
  }
  if (!doc.contains("topk_accuracy")) return bad("missing \"topk_accuracy\" (one list of top-1..top-k accuracies per head)");
  const nlohmann::json& heads = doc["topk_accuracy"];
  if (!heads.is_array() || heads.empty()) {
    return bad(absl::StrCat("\"topk_accuracy\" must be a non-empty list with one list per head, got ",
                            heads.dump()));
  }
  if (heads.size() > static_cast<size_t>(MedusaTree::kMaxDepth)) {
    return bad(absl::StrCat("\"topk_accuracy\" has ", heads.size(), " heads, more than the limit of ",
                            MedusaTree::kMaxDepth));
  }
  for (size_t k = 0; k < heads.size(); ++k) {
    const nlohmann::json& head = heads[k];
    if (!head.is_array() || head.empty()) {
      return bad(absl::StrCat("topk_accuracy[", k, "] must be a non-empty list of top-1, top-2, ... ",
                              "accuracies, got ", head.dump()));
    }
    std::vector<double> top;
    for (size_t i = 0; i < head.size(); ++i) {
      const nlohmann::json& v = head[i];
      if (!v.is_number()) {
        return bad(absl::StrCat("topk_accuracy[", k, "][", i, "] is ", v.dump(), ", not a number"));
      }
      const double x = v.get<double>();
      if (!(x >= 0.0 && x <= 1.0)) {
        return bad(absl::StrCat("topk_accuracy[", k, "][", i, "] = ", x, " is outside [0, 1]"));
      }
      if (!top.empty() && x < top.back() - kMonotoneSlack) {
        return bad(absl::StrCat("topk_accuracy[", k, "] decreases: top-", i + 1, " = ", x, " < top-", i,
                                " = ", top.back(), " (top-k accuracies are cumulative, so they cannot "
                                "decrease with k)"));
      }
      top.push_back(x);
    }
    calibration.topk_accuracy.push_back(std::move(top));
  }
  return calibration;
}

absl::StatusOr<Calibration> LoadCalibration(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, "calibration file"));
  return ParseCalibration(text, path);
}

// ------------------------------------------------------------------ greedy trees

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
  double best_speedup = 1.0;
  for (size_t i = 0; i < expected_speedup.size(); ++i) {
    if (expected_speedup[i] > best_speedup) {
      best = static_cast<int>(i);
      best_speedup = expected_speedup[i];
    }
  }
  return best;
}

// ------------------------------------------------------------------ auto trees

namespace {

// The machine a measurement was made on ("machine": {"id"}), "" when it does not say.
std::string MachineIdOf(const nlohmann::json& measurement) {
  if (!measurement.is_object() || !measurement.contains("machine")) return "";
  const nlohmann::json& machine = measurement["machine"];
  if (!machine.is_object() || !machine.contains("id") || !machine["id"].is_string()) return "";
  return machine["id"].get<std::string>();
}

// The index of the measurement to use on `machine_id`: its own, else one naming no
// machine, else the first.
size_t PickMeasurement(const nlohmann::json& machines, const std::string& machine_id) {
  for (size_t i = 0; i < machines.size(); ++i) {
    if (!machine_id.empty() && MachineIdOf(machines[i]) == machine_id) return i;
  }
  for (size_t i = 0; i < machines.size(); ++i) {
    if (MachineIdOf(machines[i]).empty()) return i;
  }
  return 0;
}

}  // namespace

absl::StatusOr<AutoTree> AutoTree::Parse(const std::string& json_text, const std::string& source, int num_heads,
                                         const std::string& machine_id) {
  std::string in;  // where in a several-machine file the measurement is, for messages
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("auto tree '", source, "': ", in, what));
  };
  const nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return bad("not valid JSON");
  const nlohmann::json* measurement = &doc;
  if (doc.is_object() && doc.contains("machines")) {
    if (!doc["machines"].is_array() || doc["machines"].empty()) {
      return bad("\"machines\" must be a non-empty list of measurements");
    }
    const size_t pick = PickMeasurement(doc["machines"], machine_id);
    measurement = &doc["machines"][pick];
    in = absl::StrCat("machines[", pick, "]: ");
  }
  const nlohmann::json& m = *measurement;
  if (!m.is_object() || !m.contains("choice") || !m["choice"].is_object() || m["choice"].empty()) {
    return bad("expected an object whose \"choice\" maps batch sizes to {\"nodes\", \"paths\"}");
  }
  AutoTree result;
  result.machine_id_ = MachineIdOf(m);
  for (const auto& [key, entry] : m["choice"].items()) {
    int batch = 0;
    if (!absl::SimpleAtoi(key, &batch) || batch < 1) {
      return bad(absl::StrCat("choice key \"", key, "\" is not a batch size (a positive integer)"));
    }
    const std::string where = absl::StrCat("choice[\"", key, "\"]");
    if (!entry.is_object() || !entry.contains("paths") || !entry.contains("nodes") ||
        !entry["nodes"].is_number_integer()) {
      return bad(absl::StrCat(where, " must be an object with integer \"nodes\" and a list \"paths\", got ",
                              entry.dump()));
    }
    ASSIGN_OR_RETURN(std::vector<std::vector<int>> paths,
                     ParseTreePaths(entry["paths"].dump(), absl::StrCat(source, " ", in, where)));
    if (entry["nodes"].get<int64_t>() != static_cast<int64_t>(paths.size())) {
      return bad(
          absl::StrCat(where, " says ", entry["nodes"].get<int64_t>(), " nodes but lists ", paths.size(), " paths"));
    }
    absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(paths, num_heads);
    if (!tree.ok()) return bad(absl::StrCat(where, ": ", tree.status().message()));
    result.choice_.emplace(batch, *std::move(tree));
  }
  return result;
}

absl::StatusOr<AutoTree> AutoTree::Load(const std::string& path, int num_heads, const std::string& machine_id) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "--tree auto needs '", path, "', which does not exist: measure it once with "
        "`medusa tree --auto --model MODEL --heads HEADS --calibration CALIBRATION.json`"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path, num_heads, machine_id);
}

absl::StatusOr<nlohmann::json> MergeAutoTreeMeasurement(const std::string& existing,
                                                        const nlohmann::json& measurement,
                                                        std::vector<std::string>* dropped) {
  std::vector<nlohmann::json> kept;
  if (!existing.empty()) {
    const nlohmann::json doc = nlohmann::json::parse(existing, nullptr, /*allow_exceptions=*/false);
    if (doc.is_object() && doc.contains("machines") && doc["machines"].is_array()) {
      kept.assign(doc["machines"].begin(), doc["machines"].end());
    } else if (doc.is_object() && doc.contains("choice")) {
      kept.push_back(doc);  // one machine's, as files were before they held several
    } else {
      return absl::InvalidArgumentError(
          "not an auto-tree file (expected an object with \"machines\" or \"choice\")");
    }
  }
  const std::string id = MachineIdOf(measurement);
  const nlohmann::json accuracy = measurement.value("topk_accuracy", nlohmann::json());
  std::erase_if(kept, [&](const nlohmann::json& m) {
    if (MachineIdOf(m) == id) return true;  // replaced by the new measurement
    // Measured for other heads' accuracies (or without saying): its choice is stale.
    if (m.is_object() && m.value("topk_accuracy", nlohmann::json()) == accuracy) return false;
    if (dropped != nullptr) dropped->push_back(MachineIdOf(m));
    return true;
  });
  kept.push_back(measurement);
  std::stable_sort(kept.begin(), kept.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
    return MachineIdOf(a) < MachineIdOf(b);
  });
  return nlohmann::json{{"machines", kept}};
}

std::vector<int> AutoTree::batch_sizes() const {
  std::vector<int> sizes;
  for (const auto& [batch, tree] : choice_) sizes.push_back(batch);
  return sizes;
}

const MedusaTree& AutoTree::TreeForBatch(int batch) const {
  auto it = choice_.lower_bound(batch);
  if (it == choice_.end()) it = std::prev(choice_.end());
  return it->second;
}

namespace {
std::string HeadsStem(const std::string& heads_path) {
  constexpr std::string_view kSuffix = ".safetensors";
  std::string stem = heads_path;
  if (stem.size() > kSuffix.size() && stem.ends_with(kSuffix)) stem.resize(stem.size() - kSuffix.size());
  return stem;
}
}  // namespace

std::string AutoTreePathFor(const std::string& heads_path) { return HeadsStem(heads_path) + ".auto_tree.json"; }

std::string CalibrationPathFor(const std::string& heads_path) {
  return HeadsStem(heads_path) + ".calibration.json";
}

}  // namespace medusa
