#pragma once
// Flags of the `medusa` tool, shared by its subcommands. Flag names are written
// with dashes on the command line (--max-tokens); absl names them with
// underscores, and NormalizeFlagNames translates.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, tokenizer);
ABSL_DECLARE_FLAG(std::string, heads);
ABSL_DECLARE_FLAG(std::string, tree);
ABSL_DECLARE_FLAG(bool, no_medusa);
ABSL_DECLARE_FLAG(std::string, acceptance);
ABSL_DECLARE_FLAG(double, typical_epsilon);
ABSL_DECLARE_FLAG(double, typical_delta);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(std::string, prompts);
ABSL_DECLARE_FLAG(bool, chat);
ABSL_DECLARE_FLAG(int32_t, max_tokens);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(double, top_p);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(std::vector<std::string>, stop);
ABSL_DECLARE_FLAG(bool, ignore_eos);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(int32_t, threads);
ABSL_DECLARE_FLAG(int32_t, kv_cache_mb);
ABSL_DECLARE_FLAG(int32_t, kv_block_size);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, log_level);
// medusa tree
ABSL_DECLARE_FLAG(std::string, calibration);
ABSL_DECLARE_FLAG(int32_t, nodes);
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(bool, auto);
ABSL_DECLARE_FLAG(std::vector<std::string>, batch_sizes);
ABSL_DECLARE_FLAG(std::vector<std::string>, tree_sizes);
ABSL_DECLARE_FLAG(int32_t, repeats);
ABSL_DECLARE_FLAG(int32_t, context_tokens);

namespace medusa::tools {

// "--max-tokens=5" -> "--max_tokens=5": dashes inside flag names become underscores.
std::vector<std::string> NormalizeFlagNames(int argc, char** argv);

}  // namespace medusa::tools
