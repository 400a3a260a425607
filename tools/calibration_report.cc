#include "tools/calibration_report.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/medusa/tree_builder.h"
#include "kernels/base/status_macros.h"

namespace medusa::tools {

nlohmann::json CalibrationJson(const std::string& heads_path, const CalibrationFlags& calibration,
                               const DistillRun& held_out, const std::vector<std::vector<double>>& topk,
                               const std::string& measured_on) {
  return {
      {"heads", std::filesystem::path(heads_path).filename().string()},
      {"prompts", std::filesystem::path(calibration.prompts_file).filename().string()},
      {"prompt_count", held_out.prompts},
      {"rows", held_out.set.rows()},
      {"measured_on", measured_on},
      {"topk_accuracy", topk},
  };
}

absl::StatusOr<std::string> WriteCalibration(const std::string& heads_path, const CalibrationFlags& calibration,
                                             const nlohmann::json& json) {
  const std::string path = calibration.out.empty() ? CalibrationPathFor(heads_path) : calibration.out;
  RETURN_IF_ERROR(WriteJson(path, json));
  return path;
}

absl::Status WriteJson(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path);
  out << value.dump(2) << "\n";
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

void PrintAccuracies(const char* what, const std::vector<std::vector<double>>& topk) {
  for (size_t k = 0; k < topk.size(); ++k) {
    std::fprintf(stderr, "%s head %zu: top-1 %.3f  top-5 %.3f  top-10 %.3f\n", what, k, topk[k][0],
                 topk[k][std::min<size_t>(4, topk[k].size() - 1)], topk[k].back());
  }
}

void AddChainAccuracy(const HeadsAccuracy& accuracy, nlohmann::json* calibration) {
  std::vector<double> independent;
  double product = 1.0;
  std::string chain_text, independent_text;
  for (size_t k = 0; k < accuracy.chain_top1.size(); ++k) {
    product *= accuracy.topk[k][0];
    independent.push_back(product);
    chain_text += absl::StrFormat(" %.3f", accuracy.chain_top1[k]);
    independent_text += absl::StrFormat(" %.3f", product);
  }
  (*calibration)["chain_top1"] = accuracy.chain_top1;
  (*calibration)["chain_top1_if_independent"] = independent;
  std::fprintf(stderr, "heads 0..k all right (top-1 chain):%s; if their errors were independent:%s\n",
               chain_text.c_str(), independent_text.c_str());
}

void AddTemperatures(const std::vector<HeadTemperatureFit>& fits, nlohmann::json* calibration) {
  nlohmann::json temperature = nlohmann::json::array(), fit = nlohmann::json::object();
  for (const char* key : {"fit_rows", "eval_rows", "nll_before", "nll_after", "top1_ece_before", "top1_ece_after"}) {
    fit[key] = nlohmann::json::array();
  }
  for (size_t k = 0; k < fits.size(); ++k) {
    const HeadTemperatureFit& f = fits[k];
    temperature.push_back(f.temperature);
    fit["fit_rows"].push_back(f.fit_rows);
    fit["eval_rows"].push_back(f.eval_rows);
    fit["nll_before"].push_back(f.nll_before);
    fit["nll_after"].push_back(f.nll_after);
    fit["top1_ece_before"].push_back(f.ece_before);
    fit["top1_ece_after"].push_back(f.ece_after);
    std::fprintf(stderr, "head %zu: temperature %.3f, top-1 calibration error %.3f -> %.3f, NLL %.3f -> %.3f\n", k,
                 f.temperature, f.ece_before, f.ece_after, f.nll_before, f.nll_after);
  }
  (*calibration)["temperature"] = temperature;
  (*calibration)["temperature_fit"] = fit;
}

}  // namespace medusa::tools
