#pragma once
// The engine: a loaded model on a compute backend, its tokenizer, the paged KV cache's
// block pool and the Medusa heads and trees in use. The decoding loop (EngineCore) runs on
// top of it. Knows nothing of gRPC.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv/block_allocator.h"
#include "engine/medusa/auto_tree_file.h"
#include "engine/medusa/hydra_tree.h"
#include "engine/medusa/tree.h"
#include "engine/medusa/tree_builder.h"
#include "engine/medusa/tree_timing.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/backend.h"
#include "kernels/model/config.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa {

struct EngineOptions {
  std::string model_path;
  std::string tokenizer_path;  // llama2.c models only; GGUF models carry their vocabulary
  // A chat-template family (chatml, llama-2, ...; chat_template.h) instead of the model's own
  // template; empty: the model's own, recognized.
  std::string chat_template;
  kernels::BackendOptions backend;
  int64_t kv_cache_bytes = 0;            // memory for the paged KV cache; 0: the backend's default
                                         // (Backend::KvBlocksFor)
  int kv_block_size = 16;                // tokens per KV block
  int prefill_chunk = 512;               // prompt tokens per forward pass
  std::string heads_path;                // Medusa heads (safetensors); empty: plain decoding only
  // Medusa tree: what `--tree` takes (README, "--tree"; ResolveTree applies those rules).
  std::string tree;
  // With tree "auto" measured at start-up: the batch sizes and tree sizes to time.
  std::vector<int> auto_tree_batch_sizes = {1};
  // One node is the cheapest tree: on quantized CPU steps, where each tree row costs a tenth of a
  // step or more, it is often the fastest.
  std::vector<int> auto_tree_sizes = {1, 2, 4, 8, 16, 32};
  // Dynamic trees (engine/medusa/dynamic_tree.h): > 0 keeps, each step, this many nodes of the
  // tree (then the envelope) by the heads' probabilities for the step; 0: the tree as it is.
  int tree_budget = 0;
  // Medusa-1 heads with tree "auto": dynamic trees whose budget is, per batch size, the node count
  // of the planner's tree for it (plain decoding where it chooses that), kept out of an envelope
  // of kDynamicEnvelopeNodes nodes grown from the heads' calibration. Hydra heads' trees are
  // dynamic and sized by the planner already.
  bool dynamic_tree = false;
  // Hydra heads' trees: how many nodes each depth expands and how many children each takes
  // (HydraTreeOptions; the budget is tree_budget's, or the tree's size).
  int hydra_expand_width = 8;
  int hydra_topk = 8;
  // Context lookup drafts (engine/medusa/context_lookup.h): > 0 lets a step whose planned tree
  // has nodes verify instead a chain of up to this many tokens that followed an earlier
  // occurrence of the context's last lookup_max_ngram..lookup_min_ngram tokens, when there is
  // one (the heads then are not called for that sequence); 0: heads only.
  int lookup_tokens = 0;
  int lookup_min_ngram = 2;
  int lookup_max_ngram = 3;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);

  const ModelConfig& config() const { return backend_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  kernels::Backend& backend() { return *backend_; }
  kv::BlockAllocator& kv_allocator() { return *kv_allocator_; }
  const EngineOptions& options() const { return options_; }
  int kv_block_size() const { return options_.kv_block_size; }

  // The Medusa tree in use, or nullptr when no heads are loaded.
  const MedusaTree* medusa_tree() const { return medusa_tree_ ? &*medusa_tree_ : nullptr; }
  // With tree "auto": every measured batch size's choice (AutoTree::TreeForBatch), for a
  // scheduler that runs many sequences; nullptr otherwise.
  const AutoTree* auto_tree() const { return auto_tree_ ? &*auto_tree_ : nullptr; }
  // The tree as chosen: options().tree, or what an empty one resolved to.
  const std::string& tree_source() const { return tree_source_; }
  // Installs heads and a tree (the tree is cut to the heads' depth). Used by
  // Create for --heads, and by tests and tools that make heads in memory.
  absl::Status SetMedusa(MedusaHeadsWeights heads, const MedusaTree& tree);
  // Dynamic trees: each step keeps `budget` nodes of the tree (0: off), estimating paths with
  // the heads' probabilities at `temperature` (per head; missing ones are 1). Create sets it from
  // options().tree_budget and the calibration beside the heads.
  void SetDynamicTrees(int budget, std::vector<double> temperature);
  int tree_budget() const { return tree_budget_; }
  // With options().dynamic_tree: the tree each step keeps its budget's nodes of; nullptr otherwise.
  const MedusaTree* dynamic_envelope() const { return dynamic_envelope_ ? &*dynamic_envelope_ : nullptr; }
  // The envelope's size, root excluded: twice the largest tree `medusa tree --auto` times.
  static constexpr int kDynamicEnvelopeNodes = 128;
  // Hydra heads' tree shape limits (budget and depth are the step's).
  HydraTreeOptions hydra_tree_options() const {
    return {.expand_width = options_.hydra_expand_width, .topk = options_.hydra_topk};
  }
  const std::vector<double>& head_temperature() const { return head_temperature_; }

  // A new, empty KV sequence drawing blocks from this engine's pool.
  kv::SequenceKv NewSequence() { return kv::SequenceKv(kv_allocator_.get(), options_.kv_block_size); }
  // The backend and KV pool, for timing Medusa trees on them (tree_timing.h).
  TimingTarget timing_target();

 private:
  Engine() = default;
  // The tree options_.tree names for `num_heads` loaded heads (an auto tree also fills
  // auto_tree_). Called with the heads installed (a measurement runs them).
  absl::StatusOr<MedusaTree> ResolveTree(int num_heads);
  // Times trees from the heads' calibration on this machine (tree "auto" without a
  // measurement of this machine's).
  absl::StatusOr<AutoTree> MeasureAutoTreeNow(int num_heads);
  // options_.tree_budget's dynamic trees (also Hydra heads' trees), with the temperatures of the
  // heads' calibration.
  absl::Status SetUpDynamicTrees(bool hydra);
  // options_.dynamic_tree's envelope and temperatures, from the heads' calibration.
  absl::Status SetUpAutoDynamicTrees();
  EngineOptions options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<kv::BlockAllocator> kv_allocator_;
  std::optional<MedusaTree> medusa_tree_;
  std::optional<AutoTree> auto_tree_;
  std::optional<MedusaTree> dynamic_envelope_;
  std::string tree_source_;
  int tree_budget_ = 0;
  std::vector<double> head_temperature_;
};

// Finds the tokenizer for a model: the explicit path if given (a SentencePiece
// .model or a llama2.c tokenizer.bin), the GGUF's own vocabulary, or a
// tokenizer.model / tokenizer.bin / tok*.bin beside a llama2.c checkpoint or inside a
// Hugging Face checkpoint directory (there, tokenizer.json when it has no tokenizer.model).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const std::string& model_path,
                                                            const std::string& tokenizer_path,
                                                            const gguf::File* gguf_file,
                                                            int vocab_size);

}  // namespace medusa
