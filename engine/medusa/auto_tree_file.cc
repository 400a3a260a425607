#include "engine/medusa/auto_tree_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/medusa/heads_file.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

// The machine a measurement was made on ("machine": {"id"}), "" when it does not say.
std::string MachineIdOf(const nlohmann::json& measurement) {
  if (!measurement.is_object() || !measurement.contains("machine")) return "";
  const nlohmann::json& machine = measurement["machine"];
  if (!machine.is_object() || !machine.contains("id") || !machine["id"].is_string()) return "";
  return machine["id"].get<std::string>();
}

// The file name of the calibration a measurement was made with ("" when it does not say).
std::string CalibrationFileOf(const nlohmann::json& measurement) {
  if (!measurement.is_object() || !measurement.contains("calibration") || !measurement["calibration"].is_string()) {
    return "";
  }
  return std::filesystem::path(measurement["calibration"].get<std::string>()).filename().string();
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

// "measurements": [{"batch_size", "nodes", "overhead", "expected_speedup"}, ...] (other fields
// are the report's own) by batch size and node count.
absl::StatusOr<std::map<int, std::map<int, TreeCost>>> ParseCosts(const nlohmann::json& list) {
  if (!list.is_array()) return absl::InvalidArgumentError("\"measurements\" must be a list");
  std::map<int, std::map<int, TreeCost>> costs;
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& e = list[i];
    const bool valid = e.is_object() && e.contains("batch_size") && e["batch_size"].is_number_integer() &&
                       e["batch_size"].get<int64_t>() >= 1 && e["batch_size"].get<int64_t>() <= (1 << 20) &&
                       e.contains("nodes") && e["nodes"].is_number_integer() && e["nodes"].get<int64_t>() >= 0 &&
                       e["nodes"].get<int64_t>() <= (1 << 20) && e.contains("overhead") && e["overhead"].is_number() &&
                       e["overhead"].get<double>() > 0 && std::isfinite(e["overhead"].get<double>()) &&
                       e.contains("expected_speedup") && e["expected_speedup"].is_number() &&
                       e["expected_speedup"].get<double>() > 0 && std::isfinite(e["expected_speedup"].get<double>());
    if (!valid) {
      return absl::InvalidArgumentError(
          absl::StrCat("measurements[", i, "] must have integer \"batch_size\" >= 1 and \"nodes\" >= 0 and positive ",
                       "\"overhead\" and \"expected_speedup\", got ", JsonSnippet(e)));
    }
    costs[e["batch_size"].get<int>()][e["nodes"].get<int>()] = {e["overhead"].get<double>(),
                                                                e["expected_speedup"].get<double>()};
  }
  return costs;
}

}  // namespace

absl::StatusOr<AutoTree> AutoTree::Parse(const std::string& json_text, const std::string& source, int num_heads,
                                         const std::string& machine_id) {
  std::string in;  // where in a several-machine file the measurement is, for messages
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("auto tree '", source, "': ", in, what));
  };
  absl::StatusOr<nlohmann::json> parsed = ParseJson(json_text, absl::StrCat("auto tree '", source, "'"));
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& doc = *parsed;
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
      return bad(absl::StrCat("choice key \"", TextSnippet(key), "\" is not a batch size (a positive integer)"));
    }
    const std::string where = absl::StrCat("choice[\"", key, "\"]");
    if (!entry.is_object() || !entry.contains("paths") || !entry.contains("nodes") ||
        !entry["nodes"].is_number_integer()) {
      return bad(absl::StrCat(where, " must be an object with integer \"nodes\" and a list \"paths\", got ",
                              JsonSnippet(entry)));
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
  if (m.contains("measurements")) {
    absl::StatusOr<std::map<int, std::map<int, TreeCost>>> costs = ParseCosts(m["measurements"]);
    if (!costs.ok()) return bad(std::string(costs.status().message()));
    result.costs_ = *std::move(costs);
  }
  return result;
}

absl::StatusOr<AutoTree> AutoTree::Load(const std::string& path, int num_heads, const std::string& machine_id) {
  absl::StatusOr<std::string> text = ReadFileBounded(path, kMaxJsonConfigBytes, "auto tree file");
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat(
        "--tree auto needs '", path, "', which does not exist: measure it once with "
        "`medusa tree --auto --model MODEL --heads HEADS --calibration CALIBRATION.json`"));
  }
  if (!text.ok()) return text.status();
  return Parse(*text, path, num_heads, machine_id);
}

absl::StatusOr<nlohmann::json> MergeAutoTreeMeasurement(const std::string& existing,
                                                        const nlohmann::json& measurement,
                                                        std::vector<std::string>* dropped) {
  std::vector<nlohmann::json> kept;
  if (!existing.empty()) {
    ASSIGN_OR_RETURN(const nlohmann::json doc, ParseJson(existing, "the existing auto-tree file"));
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
  const std::string calibration = CalibrationFileOf(measurement);
  // Measured for other accuracies from the same calibration file (or without saying which): the
  // heads changed since, and its choice is stale. Other accuracies from another calibration file
  // are another weight mode's calibration, measured apart on purpose.
  auto stale = [&](const nlohmann::json& m) {
    if (!m.is_object()) return true;
    if (m.value("topk_accuracy", nlohmann::json()) == accuracy) return false;
    const std::string theirs = CalibrationFileOf(m);
    return calibration.empty() || theirs.empty() || theirs == calibration;
  };
  std::erase_if(kept, [&](const nlohmann::json& m) {
    if (MachineIdOf(m) == id) return true;  // replaced by the new measurement
    if (!stale(m)) return false;
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

int AutoTree::MeasuredBatchFor(int batch) const {
  auto it = choice_.lower_bound(batch);
  if (it == choice_.end()) it = std::prev(choice_.end());
  return it->first;
}

const MedusaTree& AutoTree::TreeForBatch(int batch) const { return choice_.at(MeasuredBatchFor(batch)); }

const std::map<int, TreeCost>& AutoTree::CostsForBatch(int batch) const {
  static const std::map<int, TreeCost> kNone;
  const auto it = costs_.find(MeasuredBatchFor(batch));
  return it != costs_.end() ? it->second : kNone;
}

bool IsAutoTreeFile(const std::string& path) {
  if (!path.ends_with(".json")) return false;
  // Unreadable or unparsable: not one (LoadTree then reports why the file cannot be read).
  absl::StatusOr<std::string> text = ReadFileBounded(path, kMaxJsonConfigBytes, "tree file");
  if (!text.ok()) return false;
  absl::StatusOr<nlohmann::json> doc = ParseJson(*text, path);
  return doc.ok() && doc->is_object() && (doc->contains("machines") || doc->contains("choice"));
}

std::string AutoTreePathFor(const std::string& heads_path) { return BesideHeads(heads_path, ".auto_tree.json"); }

}  // namespace medusa
