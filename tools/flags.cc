#include "tools/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "", "Model file: GGUF or llama2.c .bin");
ABSL_FLAG(std::string, tokenizer, "",
          "Tokenizer for llama2.c models: SentencePiece .model or llama2.c tokenizer.bin "
          "(default: found beside the model; GGUF models carry their own)");
ABSL_FLAG(std::string, heads, "", "Medusa heads (safetensors)");
ABSL_FLAG(std::string, tree, "",
          "Medusa tree: a preset name, a JSON file of paths, or auto (see README). Default: auto when the "
          "heads have a calibration beside them, else mc_sim_7b_63");
ABSL_FLAG(bool, no_medusa, false,
          "Plain decoding (one token per step) through the same loop, even with --heads");
ABSL_FLAG(std::string, acceptance, "typical",
          "Draft acceptance when sampling (--temperature > 0): typical (the Medusa paper's typical acceptance, "
          "--typical-epsilon/--typical-delta) or rejection (rejection sampling: exactly the model's sampling "
          "distribution)");
ABSL_FLAG(double, typical_epsilon, 0.09,
          "Typical acceptance (--acceptance typical) when sampling: accept x if "
          "p(x) > min(epsilon, delta * exp(-H(p)))");
ABSL_FLAG(double, typical_delta, 0.3, "Typical acceptance delta (see --typical-epsilon)");
ABSL_FLAG(std::string, prompt, "", "Prompt text");
ABSL_FLAG(std::string, prompts, "",
          "JSONL file of prompts: {\"prompt\": ...} or {\"messages\": [{\"role\", \"content\"}]} per line");
ABSL_FLAG(bool, chat, false, "Apply the model's chat template to --prompt / \"prompt\" entries");
ABSL_FLAG(int32_t, max_tokens, 256, "Most tokens to generate per prompt");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 is greedy decoding");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling mass, in (0, 1]");
ABSL_FLAG(int32_t, top_k, 0, "Sample among the k most likely tokens; 0 for all");
ABSL_FLAG(uint64_t, seed, 0, "Random seed (same seed, same output)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "Comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past end-of-sequence tokens (benchmarks)");
ABSL_FLAG(std::string, device, "cpu", "Compute device: cpu or cuda");
ABSL_FLAG(int32_t, threads, 0, "CPU threads; 0 for every core");
ABSL_FLAG(int32_t, kv_cache_mb, 512, "Memory for the paged KV cache, in MiB");
ABSL_FLAG(int32_t, kv_block_size, 16, "Tokens per KV cache block");
ABSL_FLAG(bool, json, false, "Print one JSON object per prompt instead of streaming text");
ABSL_FLAG(std::string, log_level, "warn", "Log level: trace, debug, info, warn, error");

// medusa tree
ABSL_FLAG(std::string, calibration, "",
          "Calibration JSON of the heads: {\"topk_accuracy\": [[top1, ..., top10] per head]}");
ABSL_FLAG(int32_t, nodes, 0, "Nodes of the greedy tree, besides the root");
ABSL_FLAG(std::string, out, "",
          "Output file (medusa tree: stdout for a greedy tree; with --auto, "
          "<heads without .safetensors>.auto_tree.json)");
ABSL_FLAG(bool, auto, false,
          "medusa tree: time greedy trees of each --tree-sizes at each --batch-sizes on this machine "
          "and pick the fastest per batch size (what --tree auto reads)");
ABSL_FLAG(std::vector<std::string>, batch_sizes, std::vector<std::string>({"1", "2", "4", "8", "16"}),
          "Comma-separated batch sizes to time (medusa tree --auto)");
ABSL_FLAG(std::vector<std::string>, tree_sizes, std::vector<std::string>({"4", "8", "16", "32", "64"}),
          "Comma-separated tree sizes (nodes besides the root) to time (medusa tree --auto)");
ABSL_FLAG(int32_t, repeats, 5, "Timed runs per measurement; the median is kept (after one warm-up)");
ABSL_FLAG(int32_t, context_tokens, 128, "Cached tokens per sequence when timing tree steps");

namespace medusa::tools {

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") break;  // the rest are positional
    if (arg.rfind("--", 0) != 0) continue;
    size_t end = arg.find('=');
    if (end == std::string::npos) end = arg.size();
    for (size_t c = 2; c < end; ++c) {
      if (arg[c] == '-') arg[c] = '_';
    }
  }
  return args;
}

}  // namespace medusa::tools
