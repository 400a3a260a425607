// Auto-tree files (HEADS.auto_tree.json, `--tree auto`): parsed for four heads, for no
// machine and for a named one (AutoTree::Parse), every measured batch size's tree looked
// up, and merged with a new measurement (MergeAutoTreeMeasurement), as `medusa tree --auto`
// does with the file it finds.

#include <string>

#include "engine/medusa/auto_tree_file.h"
#include "fuzz_support.h"
#include "nlohmann/json.hpp"

namespace {

const nlohmann::json& Measurement() {
  static const nlohmann::json measurement = nlohmann::json::parse(R"({
    "machine": {"id": "fuzz-machine"}, "topk_accuracy": [[0.5, 0.6], [0.3, 0.4]],
    "choice": {"1": {"nodes": 2, "paths": [[0], [0, 0]]}, "4": {"nodes": 0, "paths": []}}})");
  return measurement;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* machine : {"", "fuzz-machine"}) {
    auto tree = medusa::AutoTree::Parse(text, "fuzz", 4, machine);
    if (!medusa::fuzz::Accepted(tree.status(), "AutoTree::Parse")) continue;
    const std::vector<int> batches = tree->batch_sizes();
    FUZZ_CHECK(!batches.empty(), "an auto tree with no batch size");
    for (int batch : batches) FUZZ_CHECK(tree->TreeForBatch(batch).max_depth() <= 4, "a tree deeper than the heads");
    tree->TreeForBatch(batches.back() + 1);
  }
  std::vector<std::string> dropped;
  auto merged = medusa::MergeAutoTreeMeasurement(text, Measurement(), &dropped);
  if (merged.ok()) {
    auto again = medusa::AutoTree::Parse(merged->dump(), "merged", 4, "fuzz-machine");
    FUZZ_CHECK(again.ok(), again.status().message());
  }
  return 0;
}
