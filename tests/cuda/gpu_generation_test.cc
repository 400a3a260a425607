// Generation on a GPU with real models, the engine on the CUDA backend: in f32 the GPU's
// greedy output is the CPU's (llama2.c's golden text for stories260K, the CPU backend's tokens
// for SmolLM2 on 20 prompts); in every storage type Medusa's greedy output is plain greedy
// decoding's, with random and with the shipped heads, trees small and large, CUDA graphs on
// and off. SmolLM2 is the full model where present, else its 6-layer cut (what travels to a
// lent GPU). Each test skips, with the driver's reason, where no GPU is visible.

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/medusa/heads_file.h"
#include "engine/medusa/tree.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "gtest/gtest.h"
#include "tests/support/gpu.h"
#include "tests/support/random_heads.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::AlpacaPrompts;
using testing::kSmolCutModel;
using testing::kSmolHeads;
using testing::kSmolModel;
using testing::kStoriesGolden;
using testing::kStoriesModel;
using testing::kStoriesTokenizer;

std::unique_ptr<Engine> MakeEngine(const std::string& model, const std::string& device, const std::string& weights,
                                   bool graphs = true) {
  EngineOptions options;
  options.model_path = model;
  if (model == kStoriesModel) options.tokenizer_path = kStoriesTokenizer;
  options.backend.device = device;
  options.backend.weights = weights;
  options.backend.cuda_graphs = graphs;
  options.backend.threads = 2;
  options.kv_cache_bytes = 256ll << 20;
  auto engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

GenerationResult MustGenerate(Engine& engine, GenerationRequest request, bool medusa) {
  request.use_medusa = medusa;
  auto result = Generate(engine, request);
  EXPECT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(engine.kv_allocator().num_used(), 0) << "KV blocks leaked";
  return result.ok() ? *std::move(result) : GenerationResult{};
}

// Chat-formatted AlpacaEval prompts for SmolLM2, `max_tokens` greedy tokens each.
std::vector<GenerationRequest> SmolRequests(const Engine& engine, int count, int max_tokens) {
  std::vector<GenerationRequest> requests;
  for (const std::string& prompt : AlpacaPrompts(count, 300)) {
    auto ids = EncodePrompt(engine.tokenizer(), prompt, /*chat=*/true);
    EXPECT_TRUE(ids.ok()) << ids.status();
    if (!ids.ok()) continue;
    GenerationRequest request;
    request.prompt_ids = *ids;
    request.max_tokens = max_tokens;
    requests.push_back(request);
  }
  return requests;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The full SmolLM2 where present, else its cut.
const std::string& SmolModel() { return std::filesystem::exists(kSmolModel) ? kSmolModel : kSmolCutModel; }

class GpuGeneration : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_GPU(); }
};

// llama2.c's `run stories260K.bin -z tok512.bin -t 0.0 -n 200`, byte for byte, on the GPU in f32.
TEST_F(GpuGeneration, Stories260KF32GreedyMatchesLlama2cGoldenOutput) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  ASSERT_MODEL_PRESENT(kStoriesGolden);
  for (bool graphs : {true, false}) {
    auto engine = MakeEngine(kStoriesModel, "cuda", "f32", graphs);
    ASSERT_NE(engine, nullptr);
    GenerationRequest request;
    request.prompt_ids = {1};  // BOS
    request.max_tokens = 200;
    request.ignore_eos = true;
    const GenerationResult result = MustGenerate(*engine, request, false);
    EXPECT_EQ(result.text, ReadFile(kStoriesGolden)) << (graphs ? "graphs" : "eager");
    EXPECT_EQ(result.steps, 200);
  }
}

// SmolLM2 (Q4_1, dequantized): the GPU in f32 picks the CPU backend's tokens.
TEST_F(GpuGeneration, SmolLM2F32GreedyEqualsTheCpuBackend) {
  ASSERT_MODEL_PRESENT(SmolModel());
  auto cpu = MakeEngine(SmolModel(), "cpu", "f32");
  auto gpu = MakeEngine(SmolModel(), "cuda", "f32");
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  EXPECT_EQ(gpu->backend().Name(), "cuda");
  for (const GenerationRequest& request : SmolRequests(*cpu, 20, 64)) {
    const GenerationResult on_cpu = MustGenerate(*cpu, request, false);
    const GenerationResult on_gpu = MustGenerate(*gpu, request, false);
    EXPECT_EQ(on_gpu.token_ids, on_cpu.token_ids);
  }
}

// Sampling with typical acceptance on the device (row statistics and single logits copied
// back, one row read per step): seeded runs repeat token for token, with CUDA graphs and
// without, and finish without leaking KV.
TEST_F(GpuGeneration, TypicalSamplingOnTheDeviceIsSeeded) {
  ASSERT_MODEL_PRESENT(SmolModel());
  ASSERT_MODEL_PRESENT(kSmolHeads);
  std::vector<std::vector<int32_t>> first;
  for (bool graphs : {true, false}) {
    auto engine = MakeEngine(SmolModel(), "cuda", "f16", graphs);
    ASSERT_NE(engine, nullptr);
    auto heads = LoadMedusaHeads(kSmolHeads, engine->config());
    ASSERT_TRUE(heads.ok()) << heads.status();
    auto tree = LoadTree("mc_sim_7b_63", heads->num_heads);
    ASSERT_TRUE(tree.ok()) << tree.status();
    ASSERT_TRUE(engine->SetMedusa(*std::move(heads), *tree).ok());
    std::vector<GenerationRequest> requests = SmolRequests(*engine, 6, 48);
    for (size_t i = 0; i < requests.size(); ++i) {
      GenerationRequest& request = requests[i];
      request.sampling.temperature = 0.7f;
      request.sampling.seed = 5 + i;
      const GenerationResult a = MustGenerate(*engine, request, true);
      const GenerationResult b = MustGenerate(*engine, request, true);
      EXPECT_EQ(a.token_ids, b.token_ids) << "prompt " << i;
      EXPECT_GT(a.new_tokens(), 0);
      if (graphs) {
        first.push_back(a.token_ids);
      } else {
        EXPECT_EQ(a.token_ids, first[i]) << "prompt " << i << ": graphs and eager launches differ";
      }
    }
  }
}

struct Case {
  std::string weights;
  std::string tree;
  bool shipped_heads;
  bool graphs;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.weights << "_" << c.tree; }

class GpuMedusaLossless : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { SKIP_WITHOUT_GPU(); }
};

// The central invariant on the device: Medusa's greedy output is plain greedy decoding's,
// token for token, in the same storage type.
TEST_P(GpuMedusaLossless, MedusaGreedyEqualsPlainGreedy) {
  const Case& c = GetParam();
  ASSERT_MODEL_PRESENT(SmolModel());
  ASSERT_MODEL_PRESENT(kSmolHeads);
  auto engine = MakeEngine(SmolModel(), "cuda", c.weights, c.graphs);
  ASSERT_NE(engine, nullptr);
  MedusaHeadsWeights heads;
  if (c.shipped_heads) {
    auto loaded = LoadMedusaHeads(kSmolHeads, engine->config());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    heads = *std::move(loaded);
  } else {
    heads = RandomMedusaHeads(engine->config(), 5, 1, false, /*seed=*/7, 0.05f);
  }
  const int num_heads = heads.num_heads;
  auto tree = c.tree == "chain" ? absl::StatusOr<MedusaTree>(MedusaTree::Chain(4)) : LoadTree(c.tree, num_heads);
  ASSERT_TRUE(tree.ok()) << tree.status();
  ASSERT_TRUE(engine->SetMedusa(std::move(heads), *tree).ok());
  int steps = 0, tokens = 0;
  for (const GenerationRequest& request : SmolRequests(*engine, 12, 48)) {
    const GenerationResult plain = MustGenerate(*engine, request, false);
    const GenerationResult medusa = MustGenerate(*engine, request, true);
    ASSERT_EQ(medusa.token_ids, plain.token_ids);
    steps += medusa.steps;
    tokens += medusa.new_tokens();
  }
  std::printf("%s: %s, %s heads, %s, graphs %s: acceleration %.3f\n", SmolModel().c_str(), c.weights.c_str(),
              c.shipped_heads ? "shipped" : "random", c.tree.c_str(), c.graphs ? "on" : "off",
              static_cast<double>(tokens) / steps);
  if (c.shipped_heads && SmolModel() == kSmolModel) {  // trained for the full model, not its cut
    EXPECT_GT(static_cast<double>(tokens) / steps, 1.2);
  }
}

INSTANTIATE_TEST_SUITE_P(
    StorageAndTrees, GpuMedusaLossless,
    ::testing::Values(Case{"f16", "mc_sim_7b_63", true, true}, Case{"f16", "mc_sim_7b_63", true, false},
                      Case{"f16", "chain", false, true}, Case{"bf16", "mc_sim_7b_63", true, true},
                      Case{"bf16", "vicuna_7b_stage2", false, true}, Case{"f32", "mc_sim_7b_63", true, true}),
    [](const auto& info) {
      const Case& c = info.param;
      return c.weights + "_" + c.tree + (c.shipped_heads ? "_shipped" : "_random") + (c.graphs ? "_graphs" : "_eager");
    });

}  // namespace
}  // namespace medusa
