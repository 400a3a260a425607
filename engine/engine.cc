#include "engine/engine.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/medusa/context_lookup.h"
#include "engine/medusa/heads_file.h"
#include "engine/medusa/tree_timing.h"
#include "engine/model/loader.h"
#include "engine/tokenizer/chat_template.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace medusa {
namespace fs = std::filesystem;

namespace {

// Dynamic trees keep nodes of a fixed tree; an auto tree changes with the batch size.
absl::Status NotAnEnvelope() {
  return absl::InvalidArgumentError(
      "--tree-budget keeps nodes of the tree --tree names (the envelope): give a preset or a file of paths, "
      "not an auto tree");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const std::string& model_path,
                                                            const std::string& tokenizer_path,
                                                            const gguf::File* gguf_file,
                                                            int vocab_size) {
  std::string path = tokenizer_path;
  if (path.empty()) {
    if (gguf_file != nullptr) return LoadGgufTokenizer(*gguf_file);
    // Beside a checkpoint file, or inside a checkpoint directory (Hugging Face): its
    // tokenizer.model where there is one, else its tokenizer.json.
    const bool checkpoint_dir = fs::is_directory(model_path);
    fs::path dir = checkpoint_dir ? fs::path(model_path) : fs::path(model_path).parent_path();
    if (checkpoint_dir && !fs::exists(dir / "tokenizer.model") && fs::exists(dir / "tokenizer.json")) {
      return LoadHfTokenizer(dir.string());
    }
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
  if (options.lookup_tokens < 0 || options.lookup_min_ngram < 1 ||
      options.lookup_max_ngram < options.lookup_min_ngram || options.lookup_max_ngram > ContextLookup::kMaxNgram) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "context lookup drafts: lookup_tokens must be >= 0 and 1 <= lookup_min_ngram <= lookup_max_ngram <= %d",
        ContextLookup::kMaxNgram));
  }
  std::unique_ptr<Engine> engine(new Engine());
  engine->options_ = options;

  kernels::BackendOptions backend_options = options.backend;
  // Scratch for a prompt chunk beside a batch of decode and tree rows.
  backend_options.reserve_step_tokens = std::max(backend_options.reserve_step_tokens, options.prefill_chunk + 512);
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend, kernels::CreateBackend(backend_options));
  // The CPU computes on the weights as kept on the host; a GPU converts float32
  // to its own type.
  WeightMode mode = WeightMode::kF32;
  if (backend->Name() == "cpu") {
    ASSIGN_OR_RETURN(mode, ParseWeightMode(options.backend.weights));
  }
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(options.model_path, mode));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizerFor(options.model_path, options.tokenizer_path,
                                                                          model.gguf.get(), model.config.vocab_size));
  if (tokenizer->vocab_size() != model.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat("tokenizer has %d tokens but the model's vocabulary is %d",
                                                      tokenizer->vocab_size(), model.config.vocab_size));
  }
  if (!options.chat_template.empty()) {
    // A name that is no family fails here, not at the first chat request.
    RETURN_IF_ERROR(NamedChatFormat(options.chat_template, "", "").status());
    tokenizer->set_chat_template_override(options.chat_template);
  }
  engine->tokenizer_ = std::move(tokenizer);

  engine->backend_ = std::move(backend);
  RETURN_IF_ERROR(engine->backend_->LoadWeights(model.config, std::move(model.weights)));

  ASSIGN_OR_RETURN(int num_blocks, engine->backend_->KvBlocksFor(options.kv_cache_bytes, options.kv_block_size));
  // No sequence can use more than the context, so a bigger pool only wastes memory
  // when one sequence runs; the server sizes it for many.
  num_blocks = std::min(num_blocks, 1 << 24);
  const size_t block_bytes = engine->backend_->KvBytesPerBlock(options.kv_block_size);
  kernels::KvCacheSpec spec{num_blocks, options.kv_block_size};
  RETURN_IF_ERROR(engine->backend_->AllocateKvCache(spec));
  engine->kv_allocator_ = std::make_unique<kv::BlockAllocator>(spec.num_blocks);
  if (!options.heads_path.empty()) {
    ASSIGN_OR_RETURN(MedusaHeadsWeights heads, LoadMedusaHeads(options.heads_path, engine->config()));
    const int num_heads = heads.num_heads;
    const bool hydra = heads.kind == HeadKind::kHydra;
    // Installed with a chain first: resolving "auto" may time trees with these heads.
    RETURN_IF_ERROR(engine->SetMedusa(std::move(heads), MedusaTree::Chain(num_heads)));
    // Checked before an auto tree is resolved (or measured) for nothing.
    if (options.tree_budget > 0 && options.tree == "auto") return NotAnEnvelope();
    ASSIGN_OR_RETURN(MedusaTree tree, engine->ResolveTree(num_heads));
    engine->medusa_tree_ = tree.TruncateToDepth(num_heads);
    if (options.tree_budget > 0 || hydra) RETURN_IF_ERROR(engine->SetUpDynamicTrees(hydra));
    if (options.dynamic_tree && !hydra) RETURN_IF_ERROR(engine->SetUpAutoDynamicTrees());
  }
  spdlog::debug("engine: {} on {} ({}), KV cache {} blocks of {} tokens ({} MiB)", engine->config().name,
                engine->backend_->Name(), engine->backend_->MachineId(), spec.num_blocks, spec.block_size,
                (static_cast<int64_t>(num_blocks) * block_bytes) >> 20);
  return engine;
}

absl::StatusOr<AutoTree> Engine::MeasureAutoTreeNow(int num_heads) {
  const std::string calibration_path = CalibrationPathFor(options_.heads_path);
  if (!fs::exists(calibration_path)) {
    return absl::NotFoundError(absl::StrFormat(
        "--tree auto needs the heads' trees measured on this machine ('%s', from `medusa tree --auto`) or "
        "their calibration ('%s', from `medusa train` or `medusa calibrate`) to measure them now; "
        "neither exists",
        AutoTreePathFor(options_.heads_path), calibration_path));
  }
  ASSIGN_OR_RETURN(Calibration calibration, LoadCalibration(calibration_path));
  AutoTreeOptions measure;
  measure.tree_sizes = options_.auto_tree_sizes;
  measure.timing.batch_sizes = options_.auto_tree_batch_sizes;
  measure.timing.repeats = 3;
  // Trees the calibration cannot fill are dropped by the measurement itself.
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(nlohmann::json report, MeasureAutoTree(timing_target(), calibration, measure));
  std::map<int, int> nodes_by_batch;  // JSON keys sort as text ("16" before "2")
  for (const auto& [batch, choice] : report["choice"].items()) {
    nodes_by_batch[std::stoi(batch)] = choice["nodes"].get<int>();
  }
  std::string summary;
  for (const auto& [batch, nodes] : nodes_by_batch) {
    absl::StrAppend(&summary, summary.empty() ? "" : ", ", "batch ", batch, ": ",
                    nodes == 0 ? std::string("plain") : absl::StrCat(nodes, " nodes"));
  }
  spdlog::info("measured Medusa trees on this machine in {:.1f} s: {} (save this with `medusa tree --auto`)",
               absl::ToDoubleSeconds(absl::Now() - start), summary);
  return AutoTree::Parse(report.dump(), "the trees measured now", num_heads);
}

absl::StatusOr<MedusaTree> Engine::ResolveTree(int num_heads) {
  tree_source_ = options_.tree;
  if (tree_source_.empty()) {
    // "auto" when it can work here: a calibration to measure with, or trees measured here.
    bool usable = fs::exists(CalibrationPathFor(options_.heads_path));
    if (!usable && fs::exists(AutoTreePathFor(options_.heads_path))) {
      absl::StatusOr<AutoTree> saved =
          AutoTree::Load(AutoTreePathFor(options_.heads_path), num_heads, backend_->MachineId());
      usable = saved.ok() && (saved->machine_id().empty() || saved->machine_id() == backend_->MachineId());
    }
    tree_source_ = usable ? "auto" : "mc_sim_7b_63";
  }
  if (tree_source_ != "auto" && !IsAutoTreeFile(tree_source_)) return LoadTree(tree_source_, num_heads);
  if (tree_source_ != "auto") {
    ASSIGN_OR_RETURN(AutoTree given, AutoTree::Load(tree_source_, num_heads, backend_->MachineId()));
    auto_tree_ = std::move(given);
  } else {
    const std::string path = AutoTreePathFor(options_.heads_path);
    std::optional<AutoTree> saved;
    if (fs::exists(path)) {
      ASSIGN_OR_RETURN(AutoTree loaded, AutoTree::Load(path, num_heads, backend_->MachineId()));
      saved = std::move(loaded);
    }
    // A saved measurement counts when this machine made it (or when it does not say:
    // a hand-written choice); timings of another machine do not travel. Load picks this
    // machine's measurement from a file that holds several.
    if (saved && (saved->machine_id().empty() || saved->machine_id() == backend_->MachineId())) {
      auto_tree_ = *std::move(saved);
    } else {
      if (saved) {
        spdlog::info("{} holds no measurement of this machine ('{}'): measuring again", path,
                     backend_->MachineId());
      }
      ASSIGN_OR_RETURN(AutoTree measured, MeasureAutoTreeNow(num_heads));
      auto_tree_ = std::move(measured);
    }
  }
  // One request at a time runs at batch size 1; a scheduler asks auto_tree() per batch.
  return auto_tree_->TreeForBatch(1);
}

TimingTarget Engine::timing_target() {
  return {.backend = *backend_,
          .kv_pool = *kv_allocator_,
          .kv_block_size = options_.kv_block_size,
          .prefill_chunk = options_.prefill_chunk,
          .threads = options_.backend.threads};
}

absl::Status Engine::SetUpDynamicTrees(bool hydra) {
  // Hydra trees grow from the heads alone; the tree (auto's too) only sets their size.
  if (auto_tree_ && !hydra) return NotAnEnvelope();
  std::vector<double> temperature;
  const std::string calibration_path = CalibrationPathFor(options_.heads_path);
  if (fs::exists(calibration_path)) {
    ASSIGN_OR_RETURN(Calibration calibration, LoadCalibration(calibration_path));
    temperature = calibration.temperature;
  }
  if (temperature.empty()) {
    spdlog::warn("dynamic trees: no head temperatures in '{}' (`medusa calibrate` fits them); using 1",
                 calibration_path);
  }
  SetDynamicTrees(options_.tree_budget, std::move(temperature));
  return absl::OkStatus();
}

absl::Status Engine::SetUpAutoDynamicTrees() {
  if (!auto_tree_) {
    return absl::InvalidArgumentError(
        "--dynamic-tree sizes each step's tree by the auto tree's choice for the batch size: it needs --tree auto "
        "(or an auto tree file); for a fixed size, give --tree-budget");
  }
  const std::string calibration_path = CalibrationPathFor(options_.heads_path);
  absl::StatusOr<Calibration> calibration = LoadCalibration(calibration_path);
  if (!calibration.ok()) {
    return absl::Status(calibration.status().code(),
                        absl::StrCat("--dynamic-tree grows its envelope from the heads' calibration: ",
                                     calibration.status().message()));
  }
  const int nodes = std::min(kDynamicEnvelopeNodes, MaxGreedyNodes(*calibration, backend_->num_medusa_heads()));
  ASSIGN_OR_RETURN(GreedyTree grown, BuildGreedyTree(*calibration, nodes, backend_->num_medusa_heads()));
  ASSIGN_OR_RETURN(MedusaTree envelope, MedusaTree::FromPaths(grown.paths, backend_->num_medusa_heads()));
  dynamic_envelope_ = std::move(envelope);
  SetDynamicTrees(0, calibration->temperature);
  return absl::OkStatus();
}

void Engine::SetDynamicTrees(int budget, std::vector<double> temperature) {
  tree_budget_ = std::max(0, budget);
  head_temperature_ = std::move(temperature);
}

absl::Status Engine::SetMedusa(MedusaHeadsWeights heads, const MedusaTree& tree) {
  const int num_heads = heads.num_heads;
  RETURN_IF_ERROR(backend_->LoadMedusaHeads(std::move(heads)));
  medusa_tree_ = tree.TruncateToDepth(num_heads);
  return absl::OkStatus();
}

}  // namespace medusa
