#pragma once
// Paths of the model fixtures the set-up script prepares under models/.

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace medusa::testing {

// The repository's root: $MEDUSA_SOURCE_DIR where set (test binaries carried to another
// machine, as scripts/gpu_check.sh runs them), else the tree they were built from.
inline std::string SourceRoot() {
  const char* root = std::getenv("MEDUSA_SOURCE_DIR");
  return root != nullptr && *root != '\0' ? root : MEDUSA_SOURCE_DIR;
}
inline std::string SourcePath(const std::string& relative) { return SourceRoot() + "/" + relative; }
inline std::string BinaryPath(const std::string& relative) { return std::string(MEDUSA_BINARY_DIR) + "/" + relative; }

inline const std::string kStoriesModel = SourcePath("models/stories260K/stories260K.bin");
inline const std::string kStoriesTokenizer = SourcePath("models/stories260K/tok512.bin");
inline const std::string kStoriesGolden = SourcePath("models/stories260K/expected_greedy_200.txt");
inline const std::string kSmolModel = SourcePath("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
// SmolLM2 cut to its first 6 layers (scripts/cut_gguf.py): what scripts/make_devpack.sh
// carries to a lent GPU, where the full GGUF (94 MB) does not fit.
inline const std::string kSmolCutModel = SourcePath("models/smollm2/SmolLM2-135M-Instruct.cut6.gguf");
// Medusa heads for SmolLM2 trained by `medusa train` and shipped in the repository.
inline const std::string kSmolHeads = SourcePath("heads/SmolLM2-135M-Instruct.medusa.safetensors");
// Hydra heads for SmolLM2 trained by `medusa train --head-type hydra`, shipped beside them.
inline const std::string kSmolHydraHeads = SourcePath("heads/SmolLM2-135M-Instruct.hydra.safetensors");

// Model files are test inputs the set-up script always provides: their absence is a failure.
#define ASSERT_MODEL_PRESENT(path)           \
  ASSERT_TRUE(std::filesystem::exists(path)) \
      << (path) << " is missing: run scripts/setup.sh to prepare the model fixtures"

}  // namespace medusa::testing

#include <fstream>
#include <vector>

#include "nlohmann/json.hpp"

namespace medusa::testing {

// AlpacaEval instructions (data/alpaca_eval.json, prepared by the set-up script),
// the first `count` no longer than `max_chars`.
inline std::vector<std::string> AlpacaPrompts(int count, size_t max_chars = 300) {
  std::ifstream in(SourcePath("data/alpaca_eval.json"));
  EXPECT_TRUE(in) << "data/alpaca_eval.json is missing: run scripts/setup.sh";
  std::vector<std::string> prompts;
  if (!in) return prompts;
  for (const auto& record : nlohmann::json::parse(in)) {
    std::string text = record["instruction"];
    if (text.size() <= max_chars) prompts.push_back(text);
    if (static_cast<int>(prompts.size()) == count) break;
  }
  return prompts;
}

}  // namespace medusa::testing
