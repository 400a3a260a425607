#include "tools/engine_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Model file: GGUF or llama2.c .bin");
ABSL_FLAG(std::string, tokenizer, "",
          "Tokenizer for llama2.c models: SentencePiece .model or llama2.c tokenizer.bin (default: found beside "
          "the model; GGUF models carry their own)");
ABSL_FLAG(std::string, heads, "", "Medusa heads (safetensors); none: plain decoding only");
ABSL_FLAG(std::string, tree, "",
          "Medusa tree: a preset name, a JSON file of paths or of `medusa tree --auto`'s choices, or auto (see "
          "README). Default: auto when the heads have a calibration or measured trees beside them, else "
          "mc_sim_7b_63");
ABSL_FLAG(std::string, device, "cpu", "Compute device: cpu or cuda");
ABSL_FLAG(int32_t, threads, 0, "CPU threads for the model; 0 for every core");
ABSL_FLAG(int32_t, kv_cache_mb, 512, "Memory for the paged KV cache, in MiB");
ABSL_FLAG(int32_t, kv_block_size, 16, "Tokens per KV cache block");

namespace medusa::tools {

absl::StatusOr<EngineOptions> EngineOptionsFromFlags() {
  EngineOptions options;
  options.model_path = absl::GetFlag(FLAGS_model);
  options.tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  options.heads_path = absl::GetFlag(FLAGS_heads);
  options.tree = absl::GetFlag(FLAGS_tree);
  options.backend.device = absl::GetFlag(FLAGS_device);
  options.backend.threads = absl::GetFlag(FLAGS_threads);
  options.kv_cache_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_kv_cache_mb)) << 20;
  options.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  if (options.heads_path.empty() && !options.tree.empty()) {
    return absl::InvalidArgumentError("--tree needs Medusa heads: give --heads PATH");
  }
  if (options.backend.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  if (absl::GetFlag(FLAGS_kv_cache_mb) < 1) return absl::InvalidArgumentError("--kv-cache-mb must be >= 1");
  if (options.kv_block_size < 1) return absl::InvalidArgumentError("--kv-block-size must be >= 1");
  return options;
}

}  // namespace medusa::tools
