// Calibration files (HEADS.calibration.json): parsed (ParseCalibration) and, when valid,
// fitted with greedy trees (BuildGreedyTree) of up to 64 nodes, which must be valid trees
// whose JSON reads back as the same paths (in tree order).

#include <algorithm>
#include <string>
#include <vector>

#include "engine/medusa/calibration.h"
#include "engine/medusa/tree.h"
#include "engine/medusa/tree_builder.h"
#include "fuzz_support.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto calibration = medusa::ParseCalibration(text, "fuzz");
  if (!medusa::fuzz::Accepted(calibration.status(), "ParseCalibration")) return 0;
  for (const int max_depth : {0, 2}) {
    const int nodes = std::min(medusa::MaxGreedyNodes(*calibration, max_depth), 64);
    auto greedy = medusa::BuildGreedyTree(*calibration, nodes, max_depth);
    if (!greedy.ok()) continue;
    FUZZ_CHECK(greedy->nodes() == nodes, "a greedy tree of another size than asked for");
    FUZZ_CHECK(greedy->expected_acceleration() >= 1.0, "an expected acceleration below 1");
    auto tree = medusa::MedusaTree::FromPaths(greedy->paths, 0);
    FUZZ_CHECK(tree.ok(), tree.status().message());
    auto paths = medusa::ParseTreePaths(greedy->ToJson().dump(), "greedy tree");  // sorted in tree order
    FUZZ_CHECK(paths.ok(), paths.status().message());
    std::vector<std::vector<int>> expected = greedy->paths;
    std::sort(expected.begin(), expected.end());
    std::sort(paths->begin(), paths->end());
    FUZZ_CHECK(*paths == expected, "a greedy tree's JSON does not read back as its paths");
  }
  return 0;
}
