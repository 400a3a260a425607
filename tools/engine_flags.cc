#include "tools/engine_flags.h"

#include <cstdint>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, model, "", "Model file: GGUF or llama2.c .bin");
ABSL_FLAG(std::string, tokenizer, "",
          "Tokenizer for llama2.c models: SentencePiece .model or llama2.c tokenizer.bin (default: found beside "
          "the model; GGUF models carry their own)");
ABSL_FLAG(std::string, chat_template, "",
          "Chat template family to use instead of the model's own: chatml, llama-2, vicuna, llama-3, mistral, "
          "zephyr, gemma or phi-3 (default: the model's template, recognized among these)");
ABSL_FLAG(std::string, heads, "", "Medusa heads (safetensors); none: plain decoding only");
ABSL_FLAG(std::string, tree, "",
          "Medusa tree: a preset name, a JSON file of paths or of `medusa tree --auto`'s choices, or auto (see "
          "README). Default: auto when the heads have a calibration or measured trees beside them, else "
          "mc_sim_7b_63");
ABSL_FLAG(int32_t, tree_budget, 0,
          "Dynamic Medusa trees: each step keeps this many nodes of --tree (a preset or file: the envelope), "
          "those whose paths the heads' probabilities make most likely this step; 0: --tree as it is");
ABSL_FLAG(bool, dynamic_tree, false,
          "Medusa heads with --tree auto: dynamic trees (as --tree-budget's) whose size per batch size is the "
          "auto tree's choice for it, kept out of a 128-node tree grown from the heads' calibration");
ABSL_FLAG(int32_t, hydra_expand_width, 8,
          "Hydra heads' trees: how many of each depth's most likely nodes get children from the next head");
ABSL_FLAG(int32_t, hydra_topk, 8, "Hydra heads' trees: children proposed per expanded node (the head's top tokens)");
ABSL_FLAG(int32_t, lookup_tokens, 0,
          "Context lookup drafts (prompt lookup decoding): where the step runs a Medusa tree, verify instead up to "
          "this many tokens that followed an earlier occurrence of the context's last 3 or 2 tokens, when there is "
          "one; 0: the heads' trees only");
ABSL_FLAG(std::string, device, "auto", "Compute device: cpu, cuda, or auto (cuda where a GPU is visible, else cpu)");
ABSL_FLAG(int32_t, threads, 0, "CPU threads for the model; 0 for every core");
ABSL_FLAG(std::string, weights, "auto",
          "How weights are kept and computed. CPU: auto (as the file stores "
          "them: Q4_0, Q4_1 and Q8_0 as blocks "
          "with 8-bit activations, F16 and BF16 as 16-bit), f32 (the "
          "reference), f16, bf16, q8_0, q4_0 or q4_1. "
          "GPU: how it stores weights and KV: auto (f16), f16, bf16, or f32 "
          "(full fp32 products)");
ABSL_FLAG(double, gpu_memory_fraction, 0.9,
          "The most of the GPU's memory in use once the KV pool is allocated (weights, scratch, the pool, and any "
          "other process's), in (0, 1]");
ABSL_FLAG(bool, cuda_graphs, true, "Replay decode and Medusa steps as captured CUDA graphs on a GPU");
ABSL_FLAG(int32_t, kv_cache_mb, 0,
          "Memory for the paged KV cache, in MiB; 0: the device's default (512 MiB on the CPU; on a GPU what "
          "--gpu-memory-fraction leaves)");
ABSL_FLAG(int32_t, kv_block_size, 16, "Tokens per KV cache block");

namespace medusa::tools {
namespace {

// A chain's nodes are rows of the step, as a tree's are: the largest tree the auto tree times.
constexpr int kMaxLookupTokens = 64;

}  // namespace

absl::StatusOr<EngineOptions> EngineOptionsFromFlags() {
  EngineOptions options;
  options.model_path = absl::GetFlag(FLAGS_model);
  options.tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  options.chat_template = absl::GetFlag(FLAGS_chat_template);
  options.heads_path = absl::GetFlag(FLAGS_heads);
  options.tree = absl::GetFlag(FLAGS_tree);
  options.tree_budget = absl::GetFlag(FLAGS_tree_budget);
  if (options.tree_budget < 0) return absl::InvalidArgumentError("--tree-budget must be >= 0");
  if (options.tree_budget > 0 && options.heads_path.empty()) {
    return absl::InvalidArgumentError("--tree-budget needs Medusa heads: give --heads PATH");
  }
  options.dynamic_tree = absl::GetFlag(FLAGS_dynamic_tree);
  if (options.dynamic_tree && options.heads_path.empty()) {
    return absl::InvalidArgumentError("--dynamic-tree needs Medusa heads: give --heads PATH");
  }
  if (options.dynamic_tree && options.tree_budget > 0) {
    return absl::InvalidArgumentError(
        "--dynamic-tree takes each step's budget from the auto tree; --tree-budget fixes one: give one of them");
  }
  options.hydra_expand_width = absl::GetFlag(FLAGS_hydra_expand_width);
  options.hydra_topk = absl::GetFlag(FLAGS_hydra_topk);
  if (options.hydra_expand_width < 1 || options.hydra_topk < 1) {
    return absl::InvalidArgumentError("--hydra-expand-width and --hydra-topk must be >= 1");
  }
  options.lookup_tokens = absl::GetFlag(FLAGS_lookup_tokens);
  if (options.lookup_tokens < 0 || options.lookup_tokens > kMaxLookupTokens) {
    return absl::InvalidArgumentError(absl::StrCat("--lookup-tokens must be in [0, ", kMaxLookupTokens, "]"));
  }
  if (options.lookup_tokens > 0 && options.heads_path.empty()) {
    return absl::InvalidArgumentError(
        "--lookup-tokens drafts where Medusa trees run, and they need heads: give --heads PATH");
  }
  options.backend.device = absl::GetFlag(FLAGS_device);
  options.backend.threads = absl::GetFlag(FLAGS_threads);
  options.backend.weights = absl::GetFlag(FLAGS_weights);
  options.backend.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  options.backend.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.kv_cache_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_kv_cache_mb)) << 20;
  options.kv_block_size = absl::GetFlag(FLAGS_kv_block_size);
  if (options.heads_path.empty() && !options.tree.empty()) {
    return absl::InvalidArgumentError("--tree needs Medusa heads: give --heads PATH");
  }
  if (options.backend.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  if (absl::GetFlag(FLAGS_kv_cache_mb) < 0) return absl::InvalidArgumentError("--kv-cache-mb must be >= 0");
  if (!(options.backend.gpu_memory_fraction > 0 && options.backend.gpu_memory_fraction <= 1)) {
    return absl::InvalidArgumentError("--gpu-memory-fraction must be in (0, 1]");
  }
  if (options.kv_block_size < 1) return absl::InvalidArgumentError("--kv-block-size must be >= 1");
  return options;
}

}  // namespace medusa::tools
