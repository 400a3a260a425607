// The CPU backend against the plain float64 Llama forward of tests/support/reference_llama (from the
// definition, no code shared with the backend), plus the paged-cache, batching and
// tree-attention properties the engine relies on.

// This file replaces operator new (and delete) to count allocations; GCC 12 flags the library's
// operator delete (which calls free(), matching the malloc / aligned_alloc used here) as
// mismatched, in headers included below.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/softmax_stats.h"
#include "tests/support/forward_batches.h"
#include "tests/support/random_heads.h"
#include "tests/support/reference_llama.h"

// Counts heap allocations process-wide, so a test can check that steady-state forward
// passes allocate nothing. The matching deletes are replaced too: AddressSanitizer's own
// operator delete reports memory from malloc as an alloc-dealloc mismatch.
std::atomic<long long> g_allocations{0};

void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void* operator new(size_t size, std::align_val_t alignment) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const size_t a = static_cast<size_t>(alignment);
  if (void* p = std::aligned_alloc(a, (size + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}

void* operator new(size_t size, const std::nothrow_t&) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

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

// ---------------------------------------------------------------------------
// Helpers.

std::unique_ptr<Backend> MakeBackend(const ModelConfig& c, const ModelWeights& w, KvCacheSpec spec) {
  auto backend = CreateBackend(BackendOptions{"cpu", 2});
  EXPECT_TRUE(backend.ok()) << backend.status();
  EXPECT_TRUE((*backend)->LoadWeights(c, w).ok());
  EXPECT_TRUE((*backend)->AllocateKvCache(spec).ok());
  return std::move(*backend);
}

constexpr double kTolerance = 1e-4;

struct Shape {
  const char* name;
  int dim, hidden, layers, heads, kv_heads, vocab;
};

// GQA, MHA, multi-query, sizes that are not multiples of the vector width, and the head
// sizes with register-resident attention paths (32, 64, 128) with groups of 3, 4 and 6.
const Shape kShapes[] = {
    {"gqa_hd8", 64, 96, 3, 8, 4, 101},           {"mha_hd16", 64, 160, 2, 4, 4, 97},
    {"mqa_odd_sizes", 40, 70, 2, 4, 1, 53},      {"gqa_hd64_group3", 384, 256, 2, 6, 2, 67},
    {"mqa_hd128_group4", 512, 192, 2, 4, 1, 61}, {"mqa_hd32_group6", 192, 128, 2, 6, 1, 59},
};

void PrintTo(const Shape& s, std::ostream* os) { *os << s.name; }

class CpuBackendShapes : public ::testing::TestWithParam<Shape> {};

// ---------------------------------------------------------------------------
// Tests.

// Block sizes below, at and above the 16-wide vectors, the sequence ending mid-block.
TEST_P(CpuBackendShapes, PrefillMatchesFloat64Reference) {
  const Shape s = GetParam();
  const ModelConfig c = SmallConfig(s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.vocab);
  const ModelWeights w = RandomWeights(c, 7);
  const std::vector<int> tokens = RandomTokens(37, c.vocab_size, 11);
  const RefOutput ref = RefForward(c, w, tokens);
  for (int block_size : {4, 16, 32}) {
    auto backend = MakeBackend(c, w, {12, block_size});
    std::vector<int32_t> table;
    for (int b = 0; b * block_size < 37; ++b) table.push_back((5 * b + 3) % 12);  // distinct, out of order
    ForwardBatch batch;
    batch.block_tables.push_back(table);
    AddCausal(&batch, 0, tokens, 0, static_cast<int>(tokens.size()));
    batch.want_hidden = true;
    ForwardResult result;
    ASSERT_TRUE(backend->Forward(batch, &result).ok());
    ASSERT_EQ(result.logits.size(), tokens.size() * c.vocab_size);
    ASSERT_EQ(result.hidden.size(), tokens.size() * c.dim);
    for (size_t i = 0; i < tokens.size(); ++i) {
      EXPECT_LT(RelativeError(&result.logits[i * c.vocab_size], ref.logits[i]), kTolerance)
          << "block size " << block_size << ", position " << i;
      EXPECT_LT(RelativeError(&result.hidden[i * c.dim], ref.hidden[i]), kTolerance)
          << "block size " << block_size << ", position " << i;
    }
  }
}

TEST_P(CpuBackendShapes, UntiedClassifierMatchesReference) {
  const Shape s = GetParam();
  ModelConfig c = SmallConfig(s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.vocab);
  c.tied_classifier = false;
  const ModelWeights w = RandomWeights(c, 8);
  auto backend = MakeBackend(c, w, {4, 4});
  const std::vector<int> tokens = RandomTokens(5, c.vocab_size, 12);
  const RefOutput ref = RefForward(c, w, tokens);
  ForwardBatch batch;
  const std::vector<int32_t> table = {2, 1};
  batch.block_tables.push_back(table);
  AddCausal(&batch, 0, tokens, 0, 5);
  ForwardResult result;
  ASSERT_TRUE(backend->Forward(batch, &result).ok());
  for (int i = 0; i < 5; ++i) {
    EXPECT_LT(RelativeError(&result.logits[i * c.vocab_size], ref.logits[i]), kTolerance) << "position " << i;
  }
}

// One prefill batch and the same tokens decoded one by one agree, with a block table
// out of order and blocks of 4 so the sequence crosses block boundaries.
TEST_P(CpuBackendShapes, PrefillEqualsSingleTokenDecodeSteps) {
  const Shape s = GetParam();
  const ModelConfig c = SmallConfig(s.dim, s.hidden, s.layers, s.heads, s.kv_heads, s.vocab);
  const ModelWeights w = RandomWeights(c, 21);
  const std::vector<int> tokens = RandomTokens(11, c.vocab_size, 22);
  const RefOutput ref = RefForward(c, w, tokens);
  const std::vector<int32_t> table = {5, 2, 9};

  auto prefill_backend = MakeBackend(c, w, {10, 4});
  ForwardBatch prefill;
  prefill.block_tables.push_back(table);
  AddCausal(&prefill, 0, tokens, 0, 11);
  ForwardResult prefilled;
  ASSERT_TRUE(prefill_backend->Forward(prefill, &prefilled).ok());

  auto decode_backend = MakeBackend(c, w, {10, 4});
  for (int i = 0; i < 11; ++i) {
    ForwardBatch step;
    step.block_tables.push_back(table);
    AddCausal(&step, 0, tokens, i, 1);
    ForwardResult decoded;
    ASSERT_TRUE(decode_backend->Forward(step, &decoded).ok());
    ASSERT_EQ(decoded.logits.size(), static_cast<size_t>(c.vocab_size));
    EXPECT_LT(RelativeError(decoded.logits.data(), &prefilled.logits[i * c.vocab_size], c.vocab_size), kTolerance)
        << "step " << i;
    EXPECT_LT(RelativeError(decoded.logits.data(), ref.logits[i]), kTolerance) << "step " << i;
  }
  // Both wrote the same K/V into the same physical slots.
  for (int i = 0; i < 11; ++i) {
    std::vector<float> k1, v1, k2, v2;
    const int block = table[i / 4], slot = i % 4;
    ASSERT_TRUE(prefill_backend->ReadKvSlot(c.n_layers - 1, block, slot, &k1, &v1).ok());
    ASSERT_TRUE(decode_backend->ReadKvSlot(c.n_layers - 1, block, slot, &k2, &v2).ok());
    EXPECT_LT(RelativeError(k1.data(), k2.data(), k1.size()), kTolerance) << "slot " << i;
    EXPECT_LT(RelativeError(v1.data(), v2.data(), v1.size()), kTolerance) << "slot " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuBackendShapes, ::testing::ValuesIn(kShapes),
                         [](const ::testing::TestParamInfo<Shape>& info) { return std::string(info.param.name); });

// Three sequences of different lengths, their tokens interleaved in one batch, then a
// second batch mixing a decode step, a prefill chunk and a longer chunk: every token
// matches the reference run of its sequence alone.
TEST(CpuBackend, SeveralSequencesInOneBatch) {
  const ModelConfig c = SmallConfig(64, 96, 3, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 31);
  auto backend = MakeBackend(c, w, {16, 4});
  const std::vector<std::vector<int>> seqs = {RandomTokens(7, c.vocab_size, 1), RandomTokens(3, c.vocab_size, 2),
                                              RandomTokens(10, c.vocab_size, 3)};
  const std::vector<std::vector<int32_t>> tables = {{4, 0}, {11}, {7, 15, 1}};
  // First batch: the first `split` tokens of each, interleaved round-robin.
  const std::vector<int> split = {4, 2, 6};
  ForwardBatch first;
  for (const auto& t : tables) first.block_tables.push_back(t);
  std::vector<std::pair<int, int>> owner;  // (seq, position) of each output row
  for (int i = 0; i < 6; ++i) {
    for (int s = 0; s < 3; ++s) {
      if (i < split[s]) {
        AddCausal(&first, s, seqs[s], i, 1);
        owner.emplace_back(s, i);
      }
    }
  }
  ForwardResult r1;
  ASSERT_TRUE(backend->Forward(first, &r1).ok());
  // Second batch: the rest, sequences in another order.
  ForwardBatch second;
  for (const auto& t : tables) second.block_tables.push_back(t);
  std::vector<std::pair<int, int>> owner2;
  for (int s : {2, 0, 1}) {
    const int rest = static_cast<int>(seqs[s].size()) - split[s];
    AddCausal(&second, s, seqs[s], split[s], rest);
    for (int i = split[s]; i < split[s] + rest; ++i) owner2.emplace_back(s, i);
  }
  ForwardResult r2;
  ASSERT_TRUE(backend->Forward(second, &r2).ok());

  std::vector<RefOutput> refs;
  for (int s = 0; s < 3; ++s) refs.push_back(RefForward(c, w, seqs[s]));
  for (size_t row = 0; row < owner.size(); ++row) {
    auto [s, pos] = owner[row];
    EXPECT_LT(RelativeError(&r1.logits[row * c.vocab_size], refs[s].logits[pos]), kTolerance)
        << "first batch, seq " << s << " pos " << pos;
  }
  for (size_t row = 0; row < owner2.size(); ++row) {
    auto [s, pos] = owner2[row];
    EXPECT_LT(RelativeError(&r2.logits[row * c.vocab_size], refs[s].logits[pos]), kTolerance)
        << "second batch, seq " << s << " pos " << pos;
  }
}

// Output rows come back in the order asked, repeats included; a batch may ask for no
// outputs at all (a prefill chunk) and still fill the cache.
TEST(CpuBackend, OutputRowsSelectAndOrder) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 41);
  auto backend = MakeBackend(c, w, {8, 4});
  const std::vector<int> tokens = RandomTokens(9, c.vocab_size, 42);
  const RefOutput ref = RefForward(c, w, tokens);
  const std::vector<int32_t> table = {1, 3, 5};

  ForwardBatch chunk;
  chunk.block_tables.push_back(table);
  AddCausal(&chunk, 0, tokens, 0, 5);
  chunk.output_rows.clear();
  ForwardResult none;
  ASSERT_TRUE(backend->Forward(chunk, &none).ok());
  EXPECT_TRUE(none.logits.empty());

  ForwardBatch rest;
  rest.block_tables.push_back(table);
  AddCausal(&rest, 0, tokens, 5, 4);
  rest.output_rows = {3, 0, 3, 2};
  rest.want_hidden = true;
  ForwardResult out;
  ASSERT_TRUE(backend->Forward(rest, &out).ok());
  ASSERT_EQ(out.logits.size(), 4u * c.vocab_size);
  ASSERT_EQ(out.hidden.size(), 4u * c.dim);
  const int positions[] = {8, 5, 8, 7};
  for (int r = 0; r < 4; ++r) {
    EXPECT_LT(RelativeError(&out.logits[r * c.vocab_size], ref.logits[positions[r]]), kTolerance) << "row " << r;
    EXPECT_LT(RelativeError(&out.hidden[r * c.dim], ref.hidden[positions[r]]), kTolerance) << "row " << r;
  }

  ForwardBatch hidden_only;
  hidden_only.block_tables.push_back(table);
  AddCausal(&hidden_only, 0, tokens, 8, 1);
  hidden_only.want_logits = false;
  hidden_only.want_hidden = true;
  ForwardResult h;
  ASSERT_TRUE(backend->Forward(hidden_only, &h).ok());
  EXPECT_TRUE(h.logits.empty());
  EXPECT_LT(RelativeError(h.hidden.data(), ref.hidden[8]), kTolerance);
}

// A Medusa-style tree after a context: every node attends to the context plus its
// ancestors and itself, and gets the logits of its root-to-node path run causally.
TEST(CpuBackend, TreeAttentionMatchesPaths) {
  const ModelConfig c = SmallConfig(64, 96, 3, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 51);
  auto backend = MakeBackend(c, w, {12, 4});
  const std::vector<int> context = RandomTokens(6, c.vocab_size, 52);
  const std::vector<int32_t> table = {8, 3, 10, 0};  // 16 slots: 6 context + 7 nodes
  ForwardBatch prefill;
  prefill.block_tables.push_back(table);
  AddCausal(&prefill, 0, context, 0, 6);
  ForwardResult ignored;
  ASSERT_TRUE(backend->Forward(prefill, &ignored).ok());

  // Tree: 0 and 5 are roots; 1, 2 children of 0; 3 child of 1; 4 child of 2; 6 child of 5.
  const std::vector<int> parent = {-1, 0, 0, 1, 2, -1, 5};
  const std::vector<int> node_token = RandomTokens(7, c.vocab_size, 53);
  const int ctx = 6;
  ForwardBatch tree;
  tree.block_tables.push_back(table);
  std::vector<std::vector<int>> paths;
  for (int j = 0; j < 7; ++j) {
    std::vector<int> chain;  // root .. j
    for (int a = j; a >= 0; a = parent[a]) chain.insert(chain.begin(), a);
    BatchToken t;
    t.token = node_token[j];
    t.position = ctx + static_cast<int>(chain.size()) - 1;
    t.seq = 0;
    t.kv_index = ctx + j;
    t.attend_prefix = ctx;
    t.extra_begin = static_cast<int32_t>(tree.extra_indices.size());
    t.extra_count = static_cast<int32_t>(chain.size());
    for (int a : chain) tree.extra_indices.push_back(ctx + a);
    tree.tokens.push_back(t);
    tree.output_rows.push_back(j);
    std::vector<int> path = context;
    for (int a : chain) path.push_back(node_token[a]);
    paths.push_back(path);
  }
  ForwardResult tree_out;
  ASSERT_TRUE(backend->Forward(tree, &tree_out).ok());

  for (int j = 0; j < 7; ++j) {
    const RefOutput ref = RefForward(c, w, paths[j]);
    EXPECT_LT(RelativeError(&tree_out.logits[j * c.vocab_size], ref.logits.back()), kTolerance) << "node " << j;
    // The backend itself on the path as a plain causal sequence, in other blocks.
    auto plain = MakeBackend(c, w, {4, 4});
    ForwardBatch causal;
    const std::vector<int32_t> other = {2, 0, 3};
    causal.block_tables.push_back(other);
    AddCausal(&causal, 0, paths[j], 0, static_cast<int>(paths[j].size()));
    ForwardResult causal_out;
    ASSERT_TRUE(plain->Forward(causal, &causal_out).ok());
    EXPECT_LT(RelativeError(&tree_out.logits[j * c.vocab_size],
                            &causal_out.logits[(paths[j].size() - 1) * c.vocab_size], c.vocab_size),
              kTolerance)
        << "node " << j;
  }
}

// KV compaction moves K and V of every layer exactly, also when sources and
// destinations overlap (a swap and a rotation).
TEST(CpuBackend, CopyKvSlotsMovesExactly) {
  const ModelConfig c = SmallConfig(64, 96, 3, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 61);
  auto backend = MakeBackend(c, w, {4, 4});
  const std::vector<int> tokens = RandomTokens(16, c.vocab_size, 62);
  const std::vector<int32_t> table = {2, 0, 3, 1};
  ForwardBatch fill;
  fill.block_tables.push_back(table);
  AddCausal(&fill, 0, tokens, 0, 16);
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
  // Swap (0,1) <-> (2,3); rotate (1,0) -> (1,1) -> (1,2) -> (1,0).
  const std::vector<KvSlotCopy> copies = {{0, 1, 2, 3}, {2, 3, 0, 1}, {1, 0, 1, 1}, {1, 1, 1, 2}, {1, 2, 1, 0}};
  ASSERT_TRUE(backend->CopyKvSlots(copies).ok());
  EXPECT_EQ(snapshot(2, 3), a);
  EXPECT_EQ(snapshot(0, 1), b);
  EXPECT_EQ(snapshot(1, 1), x);
  EXPECT_EQ(snapshot(1, 2), y);
  EXPECT_EQ(snapshot(1, 0), z);

  const std::vector<KvSlotCopy> bad = {{0, 0, 1, 1}, {4, 0, 0, 0}};
  const absl::Status s = backend->CopyKvSlots(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(snapshot(1, 1), x) << "a rejected copy list must not copy anything";
  std::vector<float> k, v;
  EXPECT_EQ(backend->ReadKvSlot(3, 0, 0, &k, &v).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ReadKvSlot(0, 0, 4, &k, &v).code(), absl::StatusCode::kInvalidArgument);
}

// Every malformed field is refused with InvalidArgument naming it; nothing crashes.
TEST(CpuBackend, InvalidBatchesAreRefused) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 71);
  auto backend = MakeBackend(c, w, {4, 4});
  const std::vector<int32_t> table = {1, 2};
  auto valid = [&] {
    ForwardBatch b;
    b.block_tables.push_back(table);
    AddCausal(&b, 0, {5, 6, 7}, 0, 3);
    return b;
  };
  ForwardResult out;
  {
    ForwardBatch b = valid();
    ASSERT_TRUE(backend->Forward(b, &out).ok());
  }
  struct Case {
    const char* field;
    void (*mutate)(ForwardBatch*);
  };
  const std::vector<int32_t> bad_table = {1, 4};
  const Case cases[] = {
      {"token", [](ForwardBatch* b) { b->tokens[1].token = 101; }},
      {"token", [](ForwardBatch* b) { b->tokens[1].token = -1; }},
      {"position", [](ForwardBatch* b) { b->tokens[0].position = -3; }},
      {"seq", [](ForwardBatch* b) { b->tokens[2].seq = 1; }},
      {"seq", [](ForwardBatch* b) { b->tokens[2].seq = -1; }},
      {"kv_index", [](ForwardBatch* b) { b->tokens[2].kv_index = 8; }},
      {"kv_index", [](ForwardBatch* b) { b->tokens[2].kv_index = -1; }},
      {"attend_prefix", [](ForwardBatch* b) { b->tokens[0].attend_prefix = 9; }},
      {"attend_prefix", [](ForwardBatch* b) { b->tokens[0].attend_prefix = -1; }},
      {"attends to nothing", [](ForwardBatch* b) { b->tokens[0].attend_prefix = 0; }},
      {"extra_begin", [](ForwardBatch* b) { b->tokens[0].extra_count = 1; }},
      {"extra_begin", [](ForwardBatch* b) { b->tokens[0].extra_begin = -1; }},
      {"extra_indices",
       [](ForwardBatch* b) {
         b->extra_indices = {8};
         b->tokens[0].extra_count = 1;
       }},
      {"output_rows", [](ForwardBatch* b) { b->output_rows.push_back(3); }},
      {"output_rows", [](ForwardBatch* b) { b->output_rows.push_back(-1); }},
  };
  for (const Case& k : cases) {
    ForwardBatch b = valid();
    k.mutate(&b);
    const absl::Status s = backend->Forward(b, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.field << ": " << s;
    EXPECT_NE(s.message().find(k.field), std::string::npos) << s;
  }
  {
    ForwardBatch b = valid();
    b.block_tables[0] = bad_table;  // block 4 of a 4-block cache
    const absl::Status s = backend->Forward(b, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("block_tables"), std::string::npos) << s;
  }
  {
    ForwardBatch empty;
    EXPECT_TRUE(backend->Forward(empty, &out).ok());
    EXPECT_TRUE(out.logits.empty());
  }
}

TEST(CpuBackend, RefusesInconsistentWeightsAndEarlyCalls) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  auto created = CreateBackend(BackendOptions{"cpu", 2});
  ASSERT_TRUE(created.ok());
  Backend& backend = **created;
  EXPECT_EQ(backend.Name(), "cpu");
  EXPECT_EQ(backend.AllocateKvCache({4, 4}).code(), absl::StatusCode::kFailedPrecondition);

  ModelWeights w = RandomWeights(c, 81);
  w.layers[1].w_up.values.pop_back();
  const absl::Status s = backend.LoadWeights(c, std::move(w));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("layers[1].w_up"), std::string::npos) << s;

  ModelConfig bad = c;
  bad.n_kv_heads = 3;
  EXPECT_EQ(backend.LoadWeights(bad, RandomWeights(c, 81)).code(), absl::StatusCode::kInvalidArgument);

  ASSERT_TRUE(backend.LoadWeights(c, RandomWeights(c, 81)).ok());
  ForwardBatch b;
  ForwardResult out;
  EXPECT_EQ(backend.Forward(b, &out).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend.AllocateKvCache({0, 4}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(backend.AllocateKvCache({4, 4}).ok());
  EXPECT_EQ(backend.KvBytesPerBlock(4), static_cast<size_t>(2 * 2 * 32 * 4 * sizeof(float)));
}

// Once a batch of some size has run, further batches no larger than it (decode steps, a tree
// verification, a prefill chunk) allocate nothing: scratch is kept and reused.
TEST(CpuBackend, SteadyStateForwardDoesNotAllocate) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 91);
  auto backend = MakeBackend(c, w, {16, 16});
  const std::vector<int32_t> table = {3, 9, 1, 12, 7};
  const std::vector<int> tokens = RandomTokens(80, c.vocab_size, 92);
  ForwardBatch prefill;
  prefill.block_tables.push_back(table);
  AddCausal(&prefill, 0, tokens, 0, 64);
  prefill.want_hidden = true;
  ForwardResult result;
  ASSERT_TRUE(backend->Forward(prefill, &result).ok());

  ForwardBatch step;
  step.block_tables.push_back(table);
  AddCausal(&step, 0, tokens, 64, 1);
  step.want_hidden = true;
  const long long before = g_allocations.load();
  for (int i = 64; i < 80; ++i) {
    step.tokens[0].token = tokens[i];
    step.tokens[0].position = step.tokens[0].kv_index = i;
    step.tokens[0].attend_prefix = i + 1;
    ASSERT_TRUE(backend->Forward(step, &result).ok());
  }
  EXPECT_EQ(g_allocations.load() - before, 0) << "allocations during 16 decode steps";

  // The counter does see the backend's allocations: a larger batch grows the scratch.
  ForwardBatch bigger;
  bigger.block_tables.push_back(table);
  AddCausal(&bigger, 0, tokens, 0, 80);
  const long long before_growth = g_allocations.load();
  ASSERT_TRUE(backend->Forward(bigger, &result).ok());
  EXPECT_GT(g_allocations.load() - before_growth, 0);
}

// Each output row's greedy token alone: the first index of its largest logit, with or
// without the logits themselves.
TEST(CpuBackend, ArgmaxRowsWithoutLogits) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 51);
  auto backend = MakeBackend(c, w, {8, 4});
  const std::vector<int> tokens = RandomTokens(6, c.vocab_size, 52);
  const std::vector<int32_t> table = {2, 0};
  ForwardBatch batch;
  batch.block_tables.push_back(table);
  AddCausal(&batch, 0, tokens, 0, 6);
  batch.output_rows = {5, 1, 5};
  ForwardResult with_logits;
  ASSERT_TRUE(backend->Forward(batch, &with_logits).ok());
  batch.want_logits = false;
  batch.want_argmax = true;
  ForwardResult ids;
  ASSERT_TRUE(backend->Forward(batch, &ids).ok());
  EXPECT_TRUE(ids.logits.empty());
  ASSERT_EQ(ids.argmax.size(), 3u);
  for (int r = 0; r < 3; ++r) {
    const float* row = with_logits.logits.data() + static_cast<size_t>(r) * c.vocab_size;
    EXPECT_EQ(ids.argmax[r], std::max_element(row, row + c.vocab_size) - row) << "row " << r;
  }
}

// Typical acceptance's queries: each asked row's softmax summary and single logits, as
// computed from the rows themselves; the rows stay readable (ReadOutputLogits) until the next
// forward, returned or not; bad queries are InvalidArgument.
TEST(CpuBackend, RowStatsLogitQueriesAndReadOutputLogits) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  const ModelWeights w = RandomWeights(c, 53);
  auto backend = MakeBackend(c, w, {8, 4});
  const std::vector<int> tokens = RandomTokens(6, c.vocab_size, 54);
  const std::vector<int32_t> table = {2, 0};
  ForwardBatch batch;
  batch.block_tables.push_back(table);
  AddCausal(&batch, 0, tokens, 0, 6);
  batch.output_rows = {5, 1, 5, 3};
  ForwardResult rows;
  ASSERT_TRUE(backend->Forward(batch, &rows).ok());
  auto row = [&](int r) {
    return absl::MakeConstSpan(rows.logits).subspan(static_cast<size_t>(r) * c.vocab_size, c.vocab_size);
  };
  std::vector<float> read;
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(backend->ReadOutputLogits(r, &read).ok());
    EXPECT_EQ(read, std::vector<float>(row(r).begin(), row(r).end())) << "row " << r;
  }

  batch.want_logits = false;
  batch.want_argmax = true;
  batch.row_stats = {{3, 0.7f}, {0, 1.0f}, {1, 2.5f}};
  batch.logit_queries = {{0, 7}, {3, 100}, {1, 0}};
  ForwardResult answers;
  ASSERT_TRUE(backend->Forward(batch, &answers).ok());
  EXPECT_TRUE(answers.logits.empty());
  ASSERT_EQ(answers.row_stats.size(), 3u);
  ASSERT_EQ(answers.queried_logits.size(), 3u);
  for (size_t q = 0; q < 3; ++q) {
    const SoftmaxStats want = TemperedSoftmaxStats(row(batch.row_stats[q].output_row), batch.row_stats[q].temperature);
    EXPECT_EQ(answers.row_stats[q].max_logit, want.max_logit);
    EXPECT_EQ(answers.row_stats[q].log_z, want.log_z);
    EXPECT_EQ(answers.row_stats[q].entropy, want.entropy);
    EXPECT_EQ(answers.queried_logits[q], row(batch.logit_queries[q].output_row)[batch.logit_queries[q].token]);
  }
  ASSERT_TRUE(backend->ReadOutputLogits(3, &read).ok());
  EXPECT_EQ(read, std::vector<float>(row(3).begin(), row(3).end()));
  EXPECT_EQ(backend->ReadOutputLogits(4, &read).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->ReadOutputLogits(-1, &read).code(), absl::StatusCode::kInvalidArgument);

  for (auto mutate : std::vector<void (*)(ForwardBatch*)>{
           [](ForwardBatch* b) { b->row_stats[0].output_row = 4; },
           [](ForwardBatch* b) { b->row_stats[1].temperature = 0.0f; },
           [](ForwardBatch* b) { b->row_stats[1].temperature = std::nanf(""); },
           [](ForwardBatch* b) { b->logit_queries[0].output_row = -1; },
           [](ForwardBatch* b) { b->logit_queries[2].token = 101; },
       }) {
    ForwardBatch bad = batch;
    mutate(&bad);
    EXPECT_EQ(backend->Forward(bad, &answers).code(), absl::StatusCode::kInvalidArgument);
  }

  // A forward that makes no logits (hidden states only) leaves none to read.
  ForwardBatch hidden_only = batch;
  hidden_only.want_argmax = false;
  hidden_only.want_hidden = true;
  hidden_only.row_stats.clear();
  hidden_only.logit_queries.clear();
  ASSERT_TRUE(backend->Forward(hidden_only, &answers).ok());
  EXPECT_EQ(backend->ReadOutputLogits(0, &read).code(), absl::StatusCode::kFailedPrecondition);
}

// MedusaHeadTopK: each head's k best tokens of MedusaHeadLogits, in order, through the draft
// vocabulary when there is one; bad requests are InvalidArgument.
TEST(CpuBackend, MedusaHeadTopKSelectsFromTheHeadsLogits) {
  const ModelConfig c = SmallConfig(64, 96, 2, 8, 4, 101);
  auto backend = MakeBackend(c, RandomWeights(c, 61), {8, 4});
  std::mt19937 rng(62);
  const std::vector<float> hidden = Uniform(&rng, 3 * c.dim, -1.0f, 1.0f);
  for (const std::vector<int32_t>& draft : {std::vector<int32_t>{}, std::vector<int32_t>{9, 40, 3, 77, 100, 0, 52}}) {
    MedusaHeadsWeights heads = RandomMedusaHeads(c, 3, 1, /*with_projection=*/false, 63, 0.2f);
    heads.draft_vocab = draft;
    ASSERT_TRUE(backend->LoadMedusaHeads(heads).ok());
    const int width = draft.empty() ? c.vocab_size : static_cast<int>(draft.size());
    const std::vector<int> topk = {4, 1, 2};
    std::vector<float> logits;
    ASSERT_TRUE(backend->MedusaHeadLogits(hidden, 3, 3, &logits).ok());
    std::vector<int32_t> ids;
    ASSERT_TRUE(backend->MedusaHeadTopK(hidden, 3, topk, &ids).ok());
    ASSERT_EQ(ids.size(), 3u * 7);
    size_t at = 0;
    for (int r = 0; r < 3; ++r) {
      for (int h = 0; h < 3; ++h) {
        const float* row = logits.data() + (static_cast<size_t>(r) * 3 + h) * width;
        std::vector<int> order(width);
        for (int i = 0; i < width; ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
        for (int k = 0; k < topk[h]; ++k, ++at) {
          EXPECT_EQ(ids[at], draft.empty() ? order[k] : draft[order[k]]) << "row " << r << " head " << h << " k " << k;
        }
      }
    }
    EXPECT_EQ(backend->MedusaHeadTopK(hidden, 3, std::vector<int>{1, 1, 1, 1}, &ids).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(backend->MedusaHeadTopK(hidden, 3, std::vector<int>{width + 1}, &ids).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(backend->MedusaHeadTopK(hidden, 3, std::vector<int>{0}, &ids).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(CreateBackend, NamesUnavailableDevices) {
  if (!CudaDeviceVisible()) {
    auto cuda = CreateBackend(BackendOptions{"cuda", 0});
    EXPECT_EQ(cuda.status().code(), absl::StatusCode::kUnavailable);
  }
  auto tpu = CreateBackend(BackendOptions{"tpu", 0});
  EXPECT_EQ(tpu.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(tpu.status().message().find("tpu"), std::string::npos);
}

}  // namespace
}  // namespace medusa::kernels
