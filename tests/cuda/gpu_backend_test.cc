// The CUDA backend on a GPU, through CreateBackend as the engine gets it: its numerics
// against the float64 reference of tests/support/reference_llama in every storage type, and
// the properties the engine relies on, bit for bit where Medusa's lossless output needs
// bits: a tree node's logits equal plain decoding's of its path, a row's outputs do not
// depend on the rows beside it, CUDA graphs replay what eager launches compute. Each test
// skips, with the driver's reason, where no GPU is visible.

#include <algorithm>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/softmax_stats.h"
#include "kernels/topk.h"
#include "tests/support/forward_batches.h"
#include "tests/support/gpu.h"
#include "tests/support/random_heads.h"
#include "tests/support/reference_llama.h"

namespace medusa::kernels {
namespace {

using testing::AddCausal;
using testing::RandomTokens;
using testing::RandomWeights;
using testing::RefForward;
using testing::RefOutput;
using testing::RelativeError;
using testing::SmallConfig;
using testing::Uniform;

struct Storage {
  const char* weights;  // BackendOptions::weights
  // Largest logit error relative to the logit scale: fp32 products for f32; for f16 and
  // bf16 the weights, KV and tensor-core inputs are rounded (11 and 8 significant bits).
  double tolerance;
};

const Storage kStorages[] = {{"f32", 1e-4}, {"f16", 1e-2}, {"bf16", 5e-2}};

void PrintTo(const Storage& s, std::ostream* os) { *os << s.weights; }

std::unique_ptr<Backend> MakeCudaBackend(const ModelConfig& c, const ModelWeights& w, KvCacheSpec spec,
                                         const std::string& weights, bool graphs = true) {
  BackendOptions options;
  options.device = "cuda";
  options.weights = weights;
  options.cuda_graphs = graphs;
  options.gpu_memory_fraction = 0.5;
  auto backend = CreateBackend(options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  EXPECT_TRUE((*backend)->LoadWeights(c, w).ok());
  EXPECT_TRUE((*backend)->AllocateKvCache(spec).ok());
  return std::move(*backend);
}

// A tree after `ctx` context tokens: node j at kv_index ctx + j sees the context and its
// root-to-node chain. Returns each node's path (root first).
std::vector<std::vector<int>> AddTree(ForwardBatch* batch, int seq, int ctx, const std::vector<int>& parent,
                                      const std::vector<int>& node_token) {
  std::vector<std::vector<int>> paths;
  for (size_t j = 0; j < parent.size(); ++j) {
    std::vector<int> chain;
    for (int a = static_cast<int>(j); a >= 0; a = parent[a]) chain.insert(chain.begin(), a);
    BatchToken t;
    t.token = node_token[j];
    t.position = ctx + static_cast<int>(chain.size()) - 1;
    t.seq = seq;
    t.kv_index = ctx + static_cast<int>(j);
    t.attend_prefix = ctx;
    t.extra_begin = static_cast<int32_t>(batch->extra_indices.size());
    t.extra_count = static_cast<int32_t>(chain.size());
    for (int a : chain) batch->extra_indices.push_back(ctx + a);
    batch->output_rows.push_back(static_cast<int32_t>(batch->tokens.size()));
    batch->tokens.push_back(t);
    std::vector<int> path;
    for (int a : chain) path.push_back(node_token[a]);
    paths.push_back(path);
  }
  return paths;
}

// A random tree of `nodes` nodes, each node's parent an earlier node or none (a root).
std::vector<int> RandomParents(int nodes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> parent(nodes, -1);
  for (int j = 1; j < nodes; ++j) parent[j] = std::uniform_int_distribution<int>(-1, j - 1)(rng);
  return parent;
}

bool SameBits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

struct Shape {
  const char* name;
  int dim, hidden, layers, heads, kv_heads, vocab;
};

// Tensor-core sizes (multiples of 64) with head sizes 64 and 128, GQA and MQA; sizes off the
// tensor-core tiles (the CUDA-core path); head size 256 (the largest the kernels take).
const Shape kShapes[] = {
    {"gqa_hd64", 256, 512, 2, 4, 2, 320},
    {"mqa_hd128", 512, 384, 2, 4, 1, 200},
    {"odd_sizes_hd8", 40, 70, 2, 5, 1, 53},
    {"mha_hd256", 512, 256, 1, 2, 2, 130},
};

void PrintTo(const Shape& s, std::ostream* os) { *os << s.name; }

class GpuBackendNumerics : public ::testing::TestWithParam<std::tuple<Shape, Storage>> {
 protected:
  void SetUp() override { SKIP_WITHOUT_GPU(); }
};

// A prompt in two chunks (the second in other blocks' order), then decode steps: every row's
// logits and hidden state within the storage type's tolerance of the float64 forward.
TEST_P(GpuBackendNumerics, PrefillAndDecodeMatchFloat64Reference) {
  const auto& [shape, storage] = GetParam();
  const ModelConfig c = SmallConfig(shape.dim, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab);
  const ModelWeights w = RandomWeights(c, 11);
  auto backend = MakeCudaBackend(c, w, {8, 8}, storage.weights);
  ASSERT_NE(backend, nullptr);
  const std::vector<int> tokens = RandomTokens(40, c.vocab_size, 12);
  const RefOutput ref = RefForward(c, w, tokens);
  const std::vector<int32_t> table = {6, 1, 4, 0, 7};

  std::vector<std::pair<int, int>> spans = {{0, 19}, {19, 14}};  // prompt chunks
  for (int i = 33; i < 40; ++i) spans.emplace_back(i, 1);        // decode steps
  for (auto [first, count] : spans) {
    ForwardBatch batch;
    batch.block_tables.push_back(table);
    AddCausal(&batch, 0, tokens, first, count);
    batch.want_hidden = true;
    ForwardResult out;
    ASSERT_TRUE(backend->Forward(batch, &out).ok());
    ASSERT_EQ(out.logits.size(), static_cast<size_t>(count) * c.vocab_size);
    for (int r = 0; r < count; ++r) {
      EXPECT_LT(RelativeError(&out.logits[r * c.vocab_size], ref.logits[first + r]), storage.tolerance)
          << "position " << first + r;
      EXPECT_LT(RelativeError(&out.hidden[r * c.dim], ref.hidden[first + r]), storage.tolerance)
          << "position " << first + r;
    }
  }
}

// A tree's nodes get, bit for bit, the logits plain decoding gives the last token of their
// root-to-node path: Medusa's greedy output equals plain greedy decoding's only if so.
TEST_P(GpuBackendNumerics, TreeNodesEqualPlainDecodingOfTheirPathsBitForBit) {
  const auto& [shape, storage] = GetParam();
  const ModelConfig c = SmallConfig(shape.dim, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab);
  const ModelWeights w = RandomWeights(c, 21);
  auto tree_backend = MakeCudaBackend(c, w, {16, 8}, storage.weights);
  auto plain_backend = MakeCudaBackend(c, w, {16, 8}, storage.weights);
  ASSERT_NE(tree_backend, nullptr);
  ASSERT_NE(plain_backend, nullptr);
  const int ctx = 21;
  const std::vector<int> context = RandomTokens(ctx, c.vocab_size, 22);
  const std::vector<int32_t> table = {3, 9, 0, 12, 5, 14, 7, 1, 10, 2, 15, 4};  // 96 slots
  ForwardBatch prefill;
  prefill.block_tables.push_back(table);
  AddCausal(&prefill, 0, context, 0, ctx);
  ForwardResult ignored;
  ASSERT_TRUE(tree_backend->Forward(prefill, &ignored).ok());

  const int nodes = 64;
  const std::vector<int> parent = RandomParents(nodes, 23);
  const std::vector<int> node_token = RandomTokens(nodes, c.vocab_size, 24);
  ForwardBatch tree;
  tree.block_tables.push_back(table);
  const std::vector<std::vector<int>> paths = AddTree(&tree, 0, ctx, parent, node_token);
  ForwardResult tree_out;
  ASSERT_TRUE(tree_backend->Forward(tree, &tree_out).ok());

  // Plain decoding of each path: the context prefilled the same way, then one token a step.
  for (int j : {0, 1, 5, 17, 40, nodes - 1}) {
    std::vector<int> sequence = context;
    sequence.insert(sequence.end(), paths[j].begin(), paths[j].end());
    ForwardBatch first;
    first.block_tables.push_back(table);
    AddCausal(&first, 0, sequence, 0, ctx);
    ASSERT_TRUE(plain_backend->Forward(first, &ignored).ok());
    ForwardResult step;
    for (size_t i = ctx; i < sequence.size(); ++i) {
      ForwardBatch decode;
      decode.block_tables.push_back(table);
      AddCausal(&decode, 0, sequence, static_cast<int>(i), 1);
      ASSERT_TRUE(plain_backend->Forward(decode, &step).ok());
    }
    EXPECT_TRUE(SameBits(&tree_out.logits[j * c.vocab_size], step.logits.data(), c.vocab_size))
        << "node " << j << " (depth " << paths[j].size() << ")";
    const RefOutput ref = RefForward(c, w, sequence);
    EXPECT_LT(RelativeError(step.logits.data(), ref.logits.back()), storage.tolerance) << "node " << j;
  }
}

// A row's outputs do not depend on the rows beside it: a decode row alone, and the same row
// beside another sequence's 63-node tree and a prompt chunk, give the same bits.
TEST_P(GpuBackendNumerics, RowsAreBatchInvariant) {
  const auto& [shape, storage] = GetParam();
  const ModelConfig c = SmallConfig(shape.dim, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab);
  const ModelWeights w = RandomWeights(c, 31);
  auto backend = MakeCudaBackend(c, w, {40, 8}, storage.weights);
  ASSERT_NE(backend, nullptr);
  const std::vector<int> a = RandomTokens(30, c.vocab_size, 32);
  const std::vector<int> b = RandomTokens(12, c.vocab_size, 33);
  const std::vector<int> p = RandomTokens(50, c.vocab_size, 34);
  const std::vector<int32_t> table_a = {0, 1, 2, 3}, table_b = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  const std::vector<int32_t> table_p = {20, 21, 22, 23, 24, 25, 26};
  ForwardBatch prefill;
  prefill.block_tables = {table_a, table_b};
  AddCausal(&prefill, 0, a, 0, 29);
  AddCausal(&prefill, 1, b, 0, 12);
  ForwardResult ignored;
  ASSERT_TRUE(backend->Forward(prefill, &ignored).ok());

  ForwardBatch alone;
  alone.block_tables.push_back(table_a);
  AddCausal(&alone, 0, a, 29, 1);
  alone.want_hidden = true;
  ForwardResult alone_out;
  ASSERT_TRUE(backend->Forward(alone, &alone_out).ok());

  ForwardBatch crowded;
  crowded.block_tables = {table_b, table_p, table_a};
  AddTree(&crowded, 0, 12, RandomParents(63, 35), RandomTokens(63, c.vocab_size, 36));
  AddCausal(&crowded, 1, p, 0, 50);
  const int row = static_cast<int>(crowded.tokens.size());
  AddCausal(&crowded, 2, a, 29, 1);
  crowded.want_hidden = true;
  ForwardResult crowded_out;
  ASSERT_TRUE(backend->Forward(crowded, &crowded_out).ok());
  EXPECT_TRUE(
      SameBits(alone_out.logits.data(), &crowded_out.logits[static_cast<size_t>(row) * c.vocab_size], c.vocab_size));
  EXPECT_TRUE(SameBits(alone_out.hidden.data(), &crowded_out.hidden[static_cast<size_t>(row) * c.dim], c.dim));
}

// CUDA graphs replay, bit for bit, what launching every kernel computes, for decode steps and
// trees of several sizes (each its own graph capacity) across many steps.
TEST_P(GpuBackendNumerics, CudaGraphsEqualEagerLaunchesBitForBit) {
  const auto& [shape, storage] = GetParam();
  const ModelConfig c = SmallConfig(shape.dim, shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.vocab);
  const ModelWeights w = RandomWeights(c, 41);
  auto graphs = MakeCudaBackend(c, w, {32, 8}, storage.weights, /*graphs=*/true);
  auto eager = MakeCudaBackend(c, w, {32, 8}, storage.weights, /*graphs=*/false);
  ASSERT_NE(graphs, nullptr);
  ASSERT_NE(eager, nullptr);
  const std::vector<int> tokens = RandomTokens(120, c.vocab_size, 42);
  std::vector<int32_t> table(32);
  for (int i = 0; i < 32; ++i) table[i] = 31 - i;
  int ctx = 0;
  std::mt19937 rng(43);
  for (int step = 0; step < 24; ++step) {
    ForwardBatch batch;
    batch.block_tables.push_back(table);
    if (step == 0) {
      AddCausal(&batch, 0, tokens, 0, 17);
    } else if (step % 3 == 0) {
      const int nodes = std::array<int, 4>{4, 16, 33, 64}[step / 3 % 4];
      AddTree(&batch, 0, ctx, RandomParents(nodes, rng()), RandomTokens(nodes, c.vocab_size, rng()));
    } else {
      AddCausal(&batch, 0, tokens, ctx, 1);
    }
    batch.want_hidden = true;
    batch.want_argmax = true;
    ForwardResult g, e;
    ASSERT_TRUE(graphs->Forward(batch, &g).ok()) << "step " << step;
    ASSERT_TRUE(eager->Forward(batch, &e).ok()) << "step " << step;
    ASSERT_EQ(g.logits.size(), e.logits.size());
    EXPECT_TRUE(SameBits(g.logits.data(), e.logits.data(), g.logits.size())) << "step " << step;
    EXPECT_TRUE(SameBits(g.hidden.data(), e.hidden.data(), g.hidden.size())) << "step " << step;
    EXPECT_EQ(g.argmax, e.argmax) << "step " << step;
    if (step == 0)
      ctx = 17;
    else if (step % 3 != 0)
      ++ctx;  // a tree's slots are overwritten by the next step
  }
}

INSTANTIATE_TEST_SUITE_P(ShapesAndStorage, GpuBackendNumerics,
                         ::testing::Combine(::testing::ValuesIn(kShapes), ::testing::ValuesIn(kStorages)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param).weights;
                         });

class GpuBackend : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_GPU(); }
};

// The device's argmax is the first largest of the logits it returns, and the heads' top-k is
// what kernels/topk.h selects from the heads' logits: the CPU's rule, exactly.
TEST_F(GpuBackend, ArgmaxAndHeadTopKFollowTheCpuSelectionRule) {
  for (const char* weights : {"f32", "f16"}) {
    const ModelConfig c = SmallConfig(256, 512, 2, 4, 2, 320);
    const ModelWeights w = RandomWeights(c, 51);
    auto backend = MakeCudaBackend(c, w, {8, 8}, weights);
    ASSERT_NE(backend, nullptr);
    ForwardBatch batch;
    const std::vector<int32_t> table = {0, 1, 2, 3};
    batch.block_tables.push_back(table);
    AddCausal(&batch, 0, RandomTokens(20, c.vocab_size, 52), 0, 20);
    batch.want_argmax = true;
    ForwardResult out;
    ASSERT_TRUE(backend->Forward(batch, &out).ok());
    ASSERT_EQ(out.argmax.size(), 20u);
    for (int r = 0; r < 20; ++r) {
      EXPECT_EQ(out.argmax[r], Argmax(absl::MakeConstSpan(out.logits).subspan(r * c.vocab_size, c.vocab_size)))
          << weights << " row " << r;
    }

    for (bool projection : {false, true}) {
      ASSERT_TRUE(backend->LoadMedusaHeads(RandomMedusaHeads(c, 4, 1, projection, 53, 0.05f)).ok());
      std::mt19937 rng(54);
      const std::vector<float> hidden = Uniform(&rng, 3 * c.dim, -1.0f, 1.0f);
      const std::vector<int> topk = {10, 1, 64, 3};
      std::vector<float> logits;
      ASSERT_TRUE(backend->MedusaHeadLogits(hidden, 3, 4, &logits).ok());
      std::vector<int32_t> expected, ids;
      TopK selector;
      SelectHeadTopK(logits, 3, c.vocab_size, topk, backend->medusa_draft_vocab(), &selector, &expected);
      ASSERT_TRUE(backend->MedusaHeadTopK(hidden, 3, topk, &ids).ok());
      EXPECT_EQ(ids, expected) << weights << (projection ? ", own projection" : ", shared classifier");
      EXPECT_EQ(backend->MedusaHeadTopK(hidden, 3, std::vector<int>{1, 1, 1, 1, 1}, &ids).code(),
                absl::StatusCode::kInvalidArgument);
    }
  }
}

// Typical acceptance's queries answered on the device: each asked row's softmax summary as
// kernels/softmax_stats.h computes it from the returned rows, single logits exactly, and
// ReadOutputLogits the rows bit for bit, returned or not; graphs and eager alike.
TEST_F(GpuBackend, RowStatsLogitQueriesAndReadOutputLogits) {
  const ModelConfig c = SmallConfig(256, 512, 2, 4, 2, 320);
  const ModelWeights w = RandomWeights(c, 56);
  for (bool graphs : {true, false}) {
    auto backend = MakeCudaBackend(c, w, {8, 8}, "f16", graphs);
    ASSERT_NE(backend, nullptr);
    const std::vector<int32_t> table = {0, 1, 2, 3};
    ForwardBatch batch;
    batch.block_tables.push_back(table);
    AddCausal(&batch, 0, RandomTokens(12, c.vocab_size, 57), 0, 12);
    batch.want_argmax = true;
    ForwardResult rows;
    ASSERT_TRUE(backend->Forward(batch, &rows).ok());
    auto row = [&](int r) {
      return absl::MakeConstSpan(rows.logits).subspan(static_cast<size_t>(r) * c.vocab_size, c.vocab_size);
    };
    batch.want_logits = false;
    batch.row_stats = {{11, 0.7f}, {0, 1.0f}, {5, 2.5f}, {11, 0.05f}};
    batch.logit_queries = {{0, 7}, {11, 319}, {5, 0}};
    ForwardResult answers;
    ASSERT_TRUE(backend->Forward(batch, &answers).ok());
    EXPECT_TRUE(answers.logits.empty());
    ASSERT_EQ(answers.row_stats.size(), batch.row_stats.size());
    for (size_t q = 0; q < batch.row_stats.size(); ++q) {
      const SoftmaxStats want =
          TemperedSoftmaxStats(row(batch.row_stats[q].output_row), batch.row_stats[q].temperature);
      EXPECT_EQ(answers.row_stats[q].max_logit, want.max_logit) << "query " << q;
      EXPECT_NEAR(answers.row_stats[q].log_z, want.log_z, 1e-5 * std::max(1.0, want.log_z)) << "query " << q;
      EXPECT_NEAR(answers.row_stats[q].entropy, want.entropy, 1e-5 * std::max(1.0, want.entropy)) << "query " << q;
    }
    ASSERT_EQ(answers.queried_logits.size(), batch.logit_queries.size());
    for (size_t q = 0; q < batch.logit_queries.size(); ++q) {
      EXPECT_EQ(answers.queried_logits[q], row(batch.logit_queries[q].output_row)[batch.logit_queries[q].token]);
    }
    std::vector<float> read;
    for (int r : {0, 5, 11}) {
      ASSERT_TRUE(backend->ReadOutputLogits(r, &read).ok());
      EXPECT_TRUE(SameBits(read.data(), row(r).data(), c.vocab_size)) << "row " << r;
    }
    EXPECT_EQ(backend->ReadOutputLogits(12, &read).code(), absl::StatusCode::kInvalidArgument);
  }
}

// The heads' logits in f32 agree with the CPU backend's (the same ResBlocks, fp32 products).
TEST_F(GpuBackend, MedusaHeadLogitsMatchTheCpuBackend) {
  const ModelConfig c = SmallConfig(256, 512, 2, 4, 2, 320);
  const ModelWeights w = RandomWeights(c, 61);
  auto gpu = MakeCudaBackend(c, w, {8, 8}, "f32");
  ASSERT_NE(gpu, nullptr);
  auto cpu = CreateBackend(BackendOptions{"cpu", 2});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE((*cpu)->LoadWeights(c, w).ok());
  for (bool projection : {false, true}) {
    ASSERT_TRUE(gpu->LoadMedusaHeads(RandomMedusaHeads(c, 3, 2, projection, 62, 0.05f)).ok());
    ASSERT_TRUE((*cpu)->LoadMedusaHeads(RandomMedusaHeads(c, 3, 2, projection, 62, 0.05f)).ok());
    std::mt19937 rng(63);
    const std::vector<float> hidden = Uniform(&rng, 5 * c.dim, -1.0f, 1.0f);
    std::vector<float> on_gpu, on_cpu;
    ASSERT_TRUE(gpu->MedusaHeadLogits(hidden, 5, 3, &on_gpu).ok());
    ASSERT_TRUE((*cpu)->MedusaHeadLogits(hidden, 5, 3, &on_cpu).ok());
    ASSERT_EQ(on_gpu.size(), on_cpu.size());
    EXPECT_LT(RelativeError(on_gpu.data(), on_cpu.data(), on_cpu.size()), 1e-4);
  }
}

// KV compaction moves K and V of every layer exactly, overlapping copies included; a bad
// copy list is refused whole.
TEST_F(GpuBackend, CopyKvSlotsMovesExactly) {
  const ModelConfig c = SmallConfig(256, 512, 3, 4, 2, 320);
  const ModelWeights w = RandomWeights(c, 71);
  for (const char* weights : {"f32", "f16", "bf16"}) {
    auto backend = MakeCudaBackend(c, w, {4, 4}, weights);
    ASSERT_NE(backend, nullptr);
    const std::vector<int32_t> table = {2, 0, 3, 1};
    ForwardBatch fill;
    fill.block_tables.push_back(table);
    AddCausal(&fill, 0, RandomTokens(16, c.vocab_size, 72), 0, 16);
    ForwardResult ignored;
    ASSERT_TRUE(backend->Forward(fill, &ignored).ok());
    auto snapshot = [&](int block, int slot) {
      std::vector<std::vector<float>> kv;
      for (int l = 0; l < c.n_layers; ++l) {
        std::vector<float> k, v;
        EXPECT_TRUE(backend->ReadKvSlot(l, block, slot, &k, &v).ok());
        kv.push_back(k);
        kv.push_back(v);
      }
      return kv;
    };
    const auto a = snapshot(0, 1), b = snapshot(2, 3), x = snapshot(1, 0), y = snapshot(1, 1), z = snapshot(1, 2);
    ASSERT_NE(a, b);
    const std::vector<KvSlotCopy> copies = {{0, 1, 2, 3}, {2, 3, 0, 1}, {1, 0, 1, 1}, {1, 1, 1, 2}, {1, 2, 1, 0}};
    ASSERT_TRUE(backend->CopyKvSlots(copies).ok());
    EXPECT_EQ(snapshot(2, 3), a) << weights;
    EXPECT_EQ(snapshot(0, 1), b) << weights;
    EXPECT_EQ(snapshot(1, 1), x) << weights;
    EXPECT_EQ(snapshot(1, 2), y) << weights;
    EXPECT_EQ(snapshot(1, 0), z) << weights;
    const std::vector<KvSlotCopy> bad = {{0, 0, 1, 1}, {4, 0, 0, 0}};
    EXPECT_EQ(backend->CopyKvSlots(bad).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(snapshot(1, 1), x) << "a rejected copy list must not copy anything";
  }
}

// Malformed batches are refused with InvalidArgument before anything reaches the device, and
// the backend runs on afterwards.
TEST_F(GpuBackend, InvalidBatchesAreRefused) {
  const ModelConfig c = SmallConfig(256, 512, 2, 4, 2, 320);
  auto backend = MakeCudaBackend(c, RandomWeights(c, 81), {4, 4}, "f16");
  ASSERT_NE(backend, nullptr);
  const std::vector<int32_t> table = {1, 2};
  auto valid = [&] {
    ForwardBatch b;
    b.block_tables.push_back(table);
    AddCausal(&b, 0, {5, 6, 7}, 0, 3);
    return b;
  };
  ForwardResult out;
  const std::vector<void (*)(ForwardBatch*)> mutations = {
      [](ForwardBatch* b) { b->tokens[1].token = 320; },       [](ForwardBatch* b) { b->tokens[2].kv_index = 8; },
      [](ForwardBatch* b) { b->tokens[0].attend_prefix = 9; }, [](ForwardBatch* b) { b->tokens[0].extra_count = 1; },
      [](ForwardBatch* b) { b->output_rows = {3}; },
  };
  for (size_t i = 0; i < mutations.size(); ++i) {
    ForwardBatch b = valid();
    mutations[i](&b);
    EXPECT_EQ(backend->Forward(b, &out).code(), absl::StatusCode::kInvalidArgument) << "case " << i;
  }
  ForwardBatch b = valid();
  EXPECT_TRUE(backend->Forward(b, &out).ok());
}

// The KV pool sized from the memory fraction holds blocks; a budget caps it.
TEST_F(GpuBackend, KvPoolIsSizedFromMemory) {
  const ModelConfig c = SmallConfig(256, 512, 2, 4, 2, 320);
  BackendOptions options;
  options.device = "cuda";
  options.gpu_memory_fraction = 0.5;
  auto backend = CreateBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  ASSERT_TRUE((*backend)->LoadWeights(c, RandomWeights(c, 91)).ok());
  const absl::StatusOr<int> from_memory = (*backend)->KvBlocksFor(0, 16);
  ASSERT_TRUE(from_memory.ok()) << from_memory.status();
  EXPECT_GT(*from_memory, 0);
  const int64_t budget = 64 * static_cast<int64_t>((*backend)->KvBytesPerBlock(16));
  const absl::StatusOr<int> capped = (*backend)->KvBlocksFor(budget, 16);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(*capped, std::min(64, *from_memory));
}

}  // namespace
}  // namespace medusa::kernels
