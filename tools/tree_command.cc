// `medusa tree`: Medusa trees fitted to the heads' calibrated accuracies.
//
//   medusa tree --calibration C.json --nodes N [--out FILE]
//     the greedy tree of N nodes (JSON; stdout without --out)
//   medusa tree --auto --model M [--tokenizer T] --heads H --calibration C.json
//               [--batch-sizes 1,2,4,8,16] [--tree-sizes 1,2,4,8,16,32,64] [--repeats 15]
//               [--context-tokens 128] [--threads N] [--out FILE]
//     times each greedy tree's verification step against a plain step at each batch
//     size on this machine and writes the per-batch-size choice that `--tree auto` reads
//     (default: <heads without .safetensors>.auto_tree.json, beside the heads). The file
//     keeps one measurement per machine: this machine's replaces its earlier one.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/medusa/auto_tree_file.h"
#include "engine/medusa/tree_builder.h"
#include "engine/medusa/tree_timing.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "tools/commands.h"
#include "tools/fail.h"

namespace medusa::tools {
namespace {

absl::StatusOr<std::vector<int>> ParseSizes(const std::vector<std::string>& items, const char* flag) {
  std::vector<int> sizes;
  for (const std::string& item : items) {
    int value = 0;
    if (!absl::SimpleAtoi(item, &value) || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", item, "' is not a positive integer"));
    }
    sizes.push_back(value);
  }
  if (sizes.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return sizes;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

int RunGreedy(const TreeCommand& command, const Calibration& calibration) {
  if (command.nodes < 1) return Fail(absl::InvalidArgumentError("--nodes N (N >= 1) is required without --auto"));
  absl::StatusOr<GreedyTree> tree = BuildGreedyTree(calibration, command.nodes);
  if (!tree.ok()) return Fail(tree.status());
  const std::string text = tree->ToJson().dump() + "\n";
  const std::string& out = command.out;
  if (out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  if (absl::Status s = WriteText(out, text); !s.ok()) return Fail(s);
  return 0;
}

void PrintMeasurements(const nlohmann::json& report) {
  std::printf("%6s %6s %10s %9s %13s %9s\n", "batch", "nodes", "step_ms", "overhead", "expected_acc", "speedup");
  for (const nlohmann::json& m : report["measurements"]) {
    std::printf("%6d %6d %10.2f %9.3f %13.3f %9.3f\n", m["batch_size"].get<int>(), m["nodes"].get<int>(),
                m["step_ms"].get<double>(), m["overhead"].get<double>(),
                m["expected_acceleration"].get<double>(), m["expected_speedup"].get<double>());
  }
  std::map<int, nlohmann::json> by_batch;  // JSON keys sort as text ("16" before "2")
  for (const auto& [batch, chosen] : report["choice"].items()) by_batch[std::stoi(batch)] = chosen;
  for (const auto& [batch, chosen] : by_batch) {
    std::printf("batch %d: %s\n", batch,
                chosen["nodes"].get<int>() == 0
                    ? "plain decoding"
                    : absl::StrCat(chosen["nodes"].get<int>(), " nodes (expected speedup ",
                                   chosen["expected_speedup"].get<double>(), ")")
                          .c_str());
  }
}

// The file at `path` (when there is one) with `report` in place of this machine's earlier
// measurement; other machines' stay, so one file serves every machine it was measured on.
// An error where `path` exists but cannot be read as a file (a FIFO, a directory, too large).
absl::StatusOr<nlohmann::json> MergeIntoAutoTreeFile(const std::string& path, const nlohmann::json& report) {
  absl::StatusOr<std::string> existing = ReadFileBounded(path, kMaxJsonConfigBytes, "auto-tree file");
  if (absl::IsNotFound(existing.status())) existing = std::string();
  if (!existing.ok()) return existing.status();
  std::vector<std::string> dropped;
  absl::StatusOr<nlohmann::json> merged = MergeAutoTreeMeasurement(*existing, report, &dropped);
  if (!merged.ok()) {
    spdlog::warn("'{}' is {}: replacing it", path, std::string(merged.status().message()));
    return nlohmann::json{{"machines", {report}}};
  }
  for (const std::string& machine : dropped) {
    spdlog::warn("dropped the measurement of '{}' from '{}': it was made for other head accuracies", machine,
                 path);
  }
  return *std::move(merged);
}

int RunAuto(const TreeCommand& command, const Calibration& calibration) {
  const std::string& heads = command.engine.heads_path;
  if (!calibration.heads.empty() &&
      std::filesystem::path(calibration.heads).filename() != std::filesystem::path(heads).filename()) {
    spdlog::warn("the calibration was measured for '{}', not '{}'", calibration.heads, heads);
  }
  AutoTreeOptions options;
  absl::StatusOr<std::vector<int>> batch_sizes = ParseSizes(command.batch_sizes, "batch-sizes");
  if (!batch_sizes.ok()) return Fail(batch_sizes.status());
  absl::StatusOr<std::vector<int>> tree_sizes = ParseSizes(command.tree_sizes, "tree-sizes");
  if (!tree_sizes.ok()) return Fail(tree_sizes.status());
  options.timing.batch_sizes = *batch_sizes;
  options.tree_sizes = *tree_sizes;
  options.timing.repeats = command.repeats;
  options.timing.context_tokens = command.context_tokens;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(command.engine);
  if (!engine.ok()) return Fail(engine.status());

  absl::StatusOr<nlohmann::json> report = MeasureAutoTree((*engine)->timing_target(), calibration, options);
  if (!report.ok()) return Fail(report.status());
  (*report)["heads"] = heads;
  (*report)["calibration"] = command.calibration;
  const std::string out = command.out.empty() ? AutoTreePathFor(heads) : command.out;
  absl::StatusOr<nlohmann::json> merged = MergeIntoAutoTreeFile(out, *report);
  if (!merged.ok()) return Fail(merged.status());
  const nlohmann::json& file = *merged;
  if (absl::Status s = WriteText(out, file.dump(2) + "\n"); !s.ok()) return Fail(s);
  PrintMeasurements(*report);
  std::printf("wrote %s (measurements of %zu machine%s)\n", out.c_str(), file["machines"].size(),
              file["machines"].size() == 1 ? "" : "s");
  return 0;
}

}  // namespace

int RunTree(const TreeCommand& command) {
  absl::StatusOr<Calibration> calibration = LoadCalibration(command.calibration);
  if (!calibration.ok()) return Fail(calibration.status());
  return command.automatic ? RunAuto(command, *calibration) : RunGreedy(command, *calibration);
}

}  // namespace medusa::tools
