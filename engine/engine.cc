#include "engine/engine.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "engine/model/loader.h"
#include "spdlog/spdlog.h"

namespace medusa {
namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const std::string& model_path,
                                                            const std::string& tokenizer_path,
                                                            const gguf::File* gguf_file,
                                                            int vocab_size) {
  std::string path = tokenizer_path;
  if (path.empty()) {
    if (gguf_file != nullptr) return LoadGgufTokenizer(*gguf_file);
    fs::path dir = fs::path(model_path).parent_path();
    for (const char* name : {"tokenizer.model", "tokenizer.bin"}) {
      if (fs::exists(dir / name)) path = (dir / name).string();
    }
    if (path.empty() && fs::is_directory(dir)) {
      for (const auto& entry : fs::directory_iterator(dir)) {
        std::string name = entry.path().filename().string();
        if (absl::StartsWith(name, "tok") && absl::EndsWith(name, ".bin")) path = entry.path().string();
      }
    }
    if (path.empty()) {
      return absl::NotFoundError(absl::StrFormat(
          "no tokenizer for %s: pass --tokenizer (a SentencePiece .model or a llama2.c tokenizer.bin)",
          model_path));
    }
  }
  if (absl::EndsWith(path, ".model")) return LoadSentencePieceModel(path);
  return LoadLlama2cTokenizer(path, vocab_size);
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  if (options.kv_block_size <= 0 || options.prefill_chunk <= 0) {
    return absl::InvalidArgumentError("kv_block_size and prefill_chunk must be positive");
  }
  std::unique_ptr<Engine> engine(new Engine());
  engine->options_ = options;

  absl::StatusOr<LoadedModel> model = LoadModel(options.model_path);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizerFor(
      options.model_path, options.tokenizer_path, model->gguf.get(), model->config.vocab_size);
  if (!tokenizer.ok()) return tokenizer.status();
  if ((*tokenizer)->vocab_size() != model->config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tokenizer has %d tokens but the model's vocabulary is %d", (*tokenizer)->vocab_size(),
        model->config.vocab_size));
  }
  engine->tokenizer_ = *std::move(tokenizer);

  absl::StatusOr<std::unique_ptr<kernels::Backend>> backend = kernels::CreateBackend(options.backend);
  if (!backend.ok()) return backend.status();
  engine->backend_ = *std::move(backend);
  if (absl::Status s = engine->backend_->LoadWeights(model->config, std::move(model->weights)); !s.ok()) {
    return s;
  }

  size_t block_bytes = engine->backend_->KvBytesPerBlock(options.kv_block_size);
  int64_t num_blocks = options.kv_cache_bytes / static_cast<int64_t>(block_bytes);
  if (num_blocks < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KV cache budget of %d bytes holds no block (one block takes %d bytes)",
        options.kv_cache_bytes, block_bytes));
  }
  // No sequence can use more than the context, so a bigger pool only wastes memory
  // when one sequence runs; the server sizes it for many.
  num_blocks = std::min<int64_t>(num_blocks, 1 << 24);
  kernels::KvCacheSpec spec{static_cast<int>(num_blocks), options.kv_block_size};
  if (absl::Status s = engine->backend_->AllocateKvCache(spec); !s.ok()) return s;
  engine->kv_allocator_ = std::make_unique<kv::BlockAllocator>(spec.num_blocks);
  if (!options.heads_path.empty()) {
    absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(options.heads_path, engine->config());
    if (!heads.ok()) return heads.status();
    absl::StatusOr<MedusaTree> tree = engine->ResolveTree(heads->num_heads);
    if (!tree.ok()) return tree.status();
    if (absl::Status s = engine->SetMedusa(*std::move(heads), *tree); !s.ok()) return s;
  }
  spdlog::debug("engine: {} on {}, KV cache {} blocks of {} tokens ({} MiB)",
                engine->config().name, engine->backend_->Name(), spec.num_blocks, spec.block_size,
                (num_blocks * block_bytes) >> 20);
  return engine;
}

absl::StatusOr<MedusaTree> Engine::ResolveTree(int num_heads) {
  if (options_.tree != "auto") return LoadTree(options_.tree, num_heads);
  absl::StatusOr<AutoTree> auto_tree = AutoTree::Load(AutoTreePathFor(options_.heads_path), num_heads);
  if (!auto_tree.ok()) return auto_tree.status();
  auto_tree_ = *std::move(auto_tree);
  // One request at a time runs at batch size 1; a scheduler asks auto_tree() per batch.
  return auto_tree_->TreeForBatch(1);
}

absl::Status Engine::SetMedusa(MedusaHeadsWeights heads, const MedusaTree& tree) {
  const int num_heads = heads.num_heads;
  if (absl::Status s = backend_->LoadMedusaHeads(std::move(heads)); !s.ok()) return s;
  medusa_tree_ = tree.TruncateToDepth(num_heads);
  return absl::OkStatus();
}

}  // namespace medusa
