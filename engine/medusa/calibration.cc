#include "engine/medusa/calibration.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/medusa/heads_file.h"
#include "engine/medusa/tree.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

// Cumulative accuracies written as count / total may wobble in the last bits when a
// tool rounds them; a drop smaller than this is read as equal.
constexpr double kMonotoneSlack = 1e-9;

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
  absl::StatusOr<nlohmann::json> parsed = ParseJson(json_text, absl::StrCat("calibration '", source, "'"));
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& doc = *parsed;
  if (!doc.is_object()) return bad("expected a JSON object with \"topk_accuracy\"");
  Calibration calibration;
  if (doc.contains("heads")) {
    if (!doc["heads"].is_string())
      return bad(absl::StrCat("\"heads\" must be a string, got ", JsonSnippet(doc["heads"])));
    calibration.heads = doc["heads"].get<std::string>();
  }
  if (!doc.contains("topk_accuracy")) return bad("missing \"topk_accuracy\" (one list of top-1..top-k accuracies per head)");
  const nlohmann::json& heads = doc["topk_accuracy"];
  if (!heads.is_array() || heads.empty()) {
    return bad(
        absl::StrCat("\"topk_accuracy\" must be a non-empty list with one list per head, got ", JsonSnippet(heads)));
  }
  if (heads.size() > static_cast<size_t>(MedusaTree::kMaxDepth)) {
    return bad(absl::StrCat("\"topk_accuracy\" has ", heads.size(), " heads, more than the limit of ",
                            MedusaTree::kMaxDepth));
  }
  for (size_t k = 0; k < heads.size(); ++k) {
    const nlohmann::json& head = heads[k];
    if (!head.is_array() || head.empty()) {
      return bad(absl::StrCat("topk_accuracy[", k, "] must be a non-empty list of top-1, top-2, ... ",
                              "accuracies, got ", JsonSnippet(head)));
    }
    std::vector<double> top;
    for (size_t i = 0; i < head.size(); ++i) {
      const nlohmann::json& v = head[i];
      if (!v.is_number()) {
        return bad(absl::StrCat("topk_accuracy[", k, "][", i, "] is ", JsonSnippet(v), ", not a number"));
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
  if (doc.contains("temperature")) {
    const nlohmann::json& t = doc["temperature"];
    if (!t.is_array() || t.size() != heads.size()) {
      return bad(absl::StrCat("\"temperature\" must be a list of ", heads.size(), " numbers (one per head), got ",
                              JsonSnippet(t)));
    }
    for (size_t k = 0; k < t.size(); ++k) {
      const double x = t[k].is_number() ? t[k].get<double>() : 0.0;
      if (!(x > 0.0 && std::isfinite(x))) {
        return bad(absl::StrCat("temperature[", k, "] is ", JsonSnippet(t[k]), ", not a positive number"));
      }
      calibration.temperature.push_back(x);
    }
  }
  return calibration;
}

absl::StatusOr<Calibration> LoadCalibration(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileBounded(path, kMaxJsonConfigBytes, "calibration file"));
  return ParseCalibration(text, path);
}

std::string CalibrationPathFor(const std::string& heads_path) { return BesideHeads(heads_path, ".calibration.json"); }

}  // namespace medusa
