#pragma once
// The command-line flags that set up an engine (model, tokenizer, heads, tree, device,
// threads, KV cache), defined once for the `medusa` tool and `medusa-server`.

#include "absl/status/statusor.h"
#include "engine/engine.h"

namespace medusa::tools {

// The file that defines these flags, for programs that pick their flags by file (--help,
// MEDUSA_<FLAG> environment overrides).
inline constexpr char kEngineFlagsFile[] = "tools/engine_flags.cc";

// EngineOptions from --model, --tokenizer, --heads, --tree, --device, --threads,
// --kv-cache-mb and --kv-block-size. InvalidArgument for --tree without --heads, or sizes
// that are not positive. Call from main, once the command line is parsed.
absl::StatusOr<EngineOptions> EngineOptionsFromFlags();

}  // namespace medusa::tools
