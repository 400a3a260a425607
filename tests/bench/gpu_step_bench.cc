// Step times of a backend on a model of Llama-2-7B's shape (random weights: speed does not
// depend on the values), the figures the GPU backend is judged by (BENCHMARKS.md, "GPU"):
//   decode   one token a step, batch 1, from contexts 128 and 1024: the step time, the bytes a
//            step must read (weights and KV) over it (achieved bandwidth), and that over
//            --bandwidth-gbs (the machine's measured copy bandwidth): the fraction of the floor;
//   medusa   a tree of T nodes (16, 32, 64) verified after those steps, plus the heads' top-k,
//            over a plain decode step there: Medusa's step overhead;
//   batch    B sequences (1 to 32) decoding together from context 128, one token each: tokens/s;
//            and B sequences' 16-node trees in one pass, over the plain step of the same B.
//
//   gpu_step_bench [--device cuda] [--weights f16] [--shape 7b|small] [--steps 20] [--runs 5]
//                  [--bandwidth-gbs 3000] [--cuda-graphs 1]
//
// Medians over --runs of the mean over --steps steps; one JSON object per line. `--shape
// small` (a few MB) checks the bench itself on any machine.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "tests/bench/bench_util.h"
#include "tests/support/random_heads.h"

namespace {

using medusa::ModelConfig;
using medusa::ModelWeights;
using namespace medusa::kernels;

ModelConfig Shape(const std::string& name) {
  ModelConfig c;
  c.name = name == "7b" ? "llama-2-7b-shape" : "small-shape";
  const bool big = name == "7b";
  c.dim = big ? 4096 : 256;
  c.hidden_dim = big ? 11008 : 704;
  c.n_layers = big ? 32 : 4;
  c.n_heads = big ? 32 : 4;
  c.n_kv_heads = c.n_heads;
  c.head_dim = 128 / (big ? 1 : 2);
  c.vocab_size = big ? 32000 : 4000;
  c.max_seq_len = 4096;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tied_classifier = false;
  return c;
}

// Uniform in [-scale, scale) from a counter-based hash: fast enough for 6.7 billion values.
std::vector<float> Random(uint64_t seed, size_t n, float scale) {
  std::vector<float> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = scale * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
  }
  return v;
}

ModelWeights RandomWeights(const ModelConfig& c) {
  const float s = 1.0f / std::sqrt(static_cast<float>(c.dim));
  const float sh = 1.0f / std::sqrt(static_cast<float>(c.hidden_dim));
  uint64_t seed = 1;
  ModelWeights w;
  w.token_embedding = Random(seed++, static_cast<size_t>(c.vocab_size) * c.dim, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    medusa::LayerWeights L;
    L.attn_norm = std::vector<float>(c.dim, 1.0f);
    L.ffn_norm = std::vector<float>(c.dim, 1.0f);
    L.wq = Random(seed++, static_cast<size_t>(c.q_dim()) * c.dim, s);
    L.wk = Random(seed++, static_cast<size_t>(c.kv_dim()) * c.dim, s);
    L.wv = Random(seed++, static_cast<size_t>(c.kv_dim()) * c.dim, s);
    L.wo = Random(seed++, static_cast<size_t>(c.dim) * c.q_dim(), s);
    L.w_gate = Random(seed++, static_cast<size_t>(c.hidden_dim) * c.dim, s);
    L.w_up = Random(seed++, static_cast<size_t>(c.hidden_dim) * c.dim, s);
    L.w_down = Random(seed++, static_cast<size_t>(c.dim) * c.hidden_dim, sh);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = std::vector<float>(c.dim, 1.0f);
  w.classifier = Random(seed++, static_cast<size_t>(c.vocab_size) * c.dim, s);
  return w;
}

// Parameters a decode step reads: every layer's matrices and the classifier.
double StepParameters(const ModelConfig& c) {
  const double layer = static_cast<double>(c.dim) * (c.q_dim() + 2.0 * c.kv_dim()) +
                       static_cast<double>(c.q_dim()) * c.dim + 3.0 * c.dim * c.hidden_dim;
  return c.n_layers * layer + static_cast<double>(c.vocab_size) * c.dim;
}

using medusa::bench::Check;
using medusa::bench::Median;
using medusa::bench::Seconds;

struct Options {
  std::string device = "cuda", weights = "f16", shape = "7b";
  int steps = 20, runs = 5, graphs = 1;
  double bandwidth_gbs = 3000;  // an H100's device-to-device copy (ENGINEERING.md)
};

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--device")
      o.device = value;
    else if (flag == "--weights")
      o.weights = value;
    else if (flag == "--shape")
      o.shape = value;
    else if (flag == "--steps")
      o.steps = std::atoi(value.c_str());
    else if (flag == "--runs")
      o.runs = std::atoi(value.c_str());
    else if (flag == "--cuda-graphs")
      o.graphs = std::atoi(value.c_str());
    else if (flag == "--bandwidth-gbs")
      o.bandwidth_gbs = std::atof(value.c_str());
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return o;
}

// Sequences with their own blocks in a shared pool, the KV filled to a context by a prefill.
class Sequences {
 public:
  Sequences(Backend* backend, int count, int slots_each, int block_size) : backend_(backend) {
    const int blocks = (slots_each + block_size - 1) / block_size;
    for (int s = 0; s < count; ++s) {
      std::vector<int32_t> table(blocks);
      for (int b = 0; b < blocks; ++b) table[b] = s * blocks + (blocks - 1 - b);  // out of order, as in use
      tables_.push_back(std::move(table));
    }
  }
  static int BlocksFor(int count, int slots_each, int block_size) {
    return count * ((slots_each + block_size - 1) / block_size);
  }

  void Prefill(int context, int vocab) {
    for (size_t s = 0; s < tables_.size(); ++s) {
      ForwardBatch batch;
      batch.block_tables.push_back(tables_[s]);
      for (int i = 0; i < context; ++i) batch.tokens.push_back(Causal(i, 0, vocab));
      batch.output_rows.push_back(context - 1);
      batch.want_logits = false;
      batch.want_argmax = true;
      ForwardResult result;
      Check(backend_->Forward(batch, &result));
    }
  }
  // One token for each sequence at `index` (its KV slot and position).
  void DecodeBatch(int index, int vocab, ForwardBatch* batch) const {
    Start(batch);
    for (size_t s = 0; s < tables_.size(); ++s) {
      batch->output_rows.push_back(static_cast<int32_t>(batch->tokens.size()));
      batch->tokens.push_back(Causal(index, static_cast<int32_t>(s), vocab));
    }
  }
  // Each sequence's tree (parents as given) after `context` tokens; hidden states of every node
  // for the heads, as the engine asks.
  void TreeBatch(int context, const std::vector<int>& parent, int vocab, ForwardBatch* batch) const {
    Start(batch);
    batch->want_hidden = true;
    for (size_t s = 0; s < tables_.size(); ++s) {
      for (size_t j = 0; j < parent.size(); ++j) {
        std::vector<int> chain;
        for (int a = static_cast<int>(j); a >= 0; a = parent[a]) chain.insert(chain.begin(), a);
        BatchToken t;
        t.token = static_cast<int32_t>((j * 7919 + s * 104729) % vocab);
        t.position = context + static_cast<int>(chain.size()) - 1;
        t.seq = static_cast<int32_t>(s);
        t.kv_index = context + static_cast<int>(j);
        t.attend_prefix = context;
        t.extra_begin = static_cast<int32_t>(batch->extra_indices.size());
        t.extra_count = static_cast<int32_t>(chain.size());
        for (int a : chain) batch->extra_indices.push_back(context + a);
        batch->output_rows.push_back(static_cast<int32_t>(batch->tokens.size()));
        batch->tokens.push_back(t);
      }
    }
  }

 private:
  static BatchToken Causal(int index, int32_t seq, int vocab) {
    BatchToken t;
    t.token = (index * 7919 + seq * 104729) % vocab;
    t.position = index;
    t.seq = seq;
    t.kv_index = index;
    t.attend_prefix = index + 1;
    return t;
  }
  void Start(ForwardBatch* batch) const {
    batch->Clear();
    for (const auto& table : tables_) batch->block_tables.push_back(table);
    batch->want_logits = false;
    batch->want_argmax = true;
    batch->want_hidden = false;
  }

  Backend* backend_;
  std::vector<std::vector<int32_t>> tables_;
};

// A tree of `nodes` nodes under one root, at most 5 deep (Medusa's heads), branching as the
// sparse trees do: early nodes take most children.
std::vector<int> TreeParents(int nodes) {
  std::vector<int> parent(nodes, -1), depth(nodes, 0);
  std::mt19937 rng(nodes);
  for (int j = 1; j < nodes; ++j) {
    int p;
    do p = std::uniform_int_distribution<int>(0, (j - 1) / 2)(rng);
    while (depth[p] >= 5);
    parent[j] = p;
    depth[j] = depth[p] + 1;
  }
  return parent;
}

// Median over runs of the mean time of `steps` calls of `step`.
double TimeSteps(const Options& o, const std::function<void()>& step) {
  step();  // warm-up: graphs captured, buffers grown
  std::vector<double> times;
  for (int run = 0; run < o.runs; ++run) {
    const double t0 = Seconds();
    for (int s = 0; s < o.steps; ++s) step();
    times.push_back((Seconds() - t0) / o.steps);
  }
  return Median(times);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseFlags(argc, argv);
  const ModelConfig config = Shape(o.shape);
  BackendOptions options;
  options.device = o.device;
  options.weights = o.weights;
  options.cuda_graphs = o.graphs != 0;
  options.threads = 0;
  auto created = CreateBackend(options);
  Check(created.status());
  Backend& backend = **created;
  const double t_load = Seconds();
  Check(backend.LoadWeights(config, RandomWeights(config)));
  Check(backend.LoadMedusaHeads(medusa::RandomMedusaHeads(config, 5, 1, false, 7, 0.02f)));
  const int bytes = o.weights == "f32" || o.device == "cpu" ? 4 : 2;
  std::fprintf(stderr, "%s on %s (%s): weights loaded in %.1f s\n", config.name.c_str(), backend.MachineId().c_str(),
               o.weights.c_str(), Seconds() - t_load);

  const int block_size = 16, max_tree = 64, max_batch = 32;
  // Trees go after the decode steps' tokens (every slot they see written).
  const int timed_steps = o.steps * o.runs + 1;
  const int slots_long = 1024 + timed_steps + max_tree;
  const int slots_short = 128 + timed_steps + 16;
  Check(backend.AllocateKvCache({std::max(Sequences::BlocksFor(1, slots_long, block_size),
                                          Sequences::BlocksFor(max_batch, slots_short, block_size)),
                                 block_size}));
  const double params = StepParameters(config);
  ForwardBatch batch;
  ForwardResult result;
  std::vector<int32_t> ids;
  std::vector<float> roots;  // the trees' roots' hidden states, for the heads
  const std::vector<int> topk = {10, 10, 10, 10, 10};
  auto print_common = [&] {
    std::printf("{\"machine\": \"%s\", \"model\": \"%s\", \"weights\": \"%s\", \"cuda_graphs\": %s, ",
                backend.MachineId().c_str(), config.name.c_str(), o.weights.c_str(), o.graphs ? "true" : "false");
  };

  for (int context : {128, 1024}) {
    Sequences one(&backend, 1, slots_long, block_size);
    one.Prefill(context, config.vocab_size);
    int index = context;
    const double plain = TimeSteps(o, [&] {
      one.DecodeBatch(index++, config.vocab_size, &batch);
      Check(backend.Forward(batch, &result));
    });
    const double step_bytes =
        params * bytes + static_cast<double>(context) * config.n_layers * 2.0 * config.kv_dim() * bytes;
    const double floor = step_bytes / (o.bandwidth_gbs * 1e9);
    print_common();
    std::printf(
        "\"bench\": \"decode\", \"batch\": 1, \"context\": %d, \"step_ms\": %.3f, \"tokens_per_second\": %.1f, "
        "\"bytes_per_step\": %.0f, \"achieved_gbs\": %.1f, \"floor_ms\": %.3f, \"fraction_of_floor\": %.3f}\n",
        context, 1e3 * plain, 1.0 / plain, step_bytes, step_bytes / plain / 1e9, 1e3 * floor, floor / plain);
    if (context != 1024) continue;
    for (int nodes : {16, 32, 64}) {
      const std::vector<int> parent = TreeParents(nodes);
      const double medusa = TimeSteps(o, [&] {
        one.TreeBatch(index, parent, config.vocab_size, &batch);
        Check(backend.Forward(batch, &result));
        roots.assign(result.hidden.begin(), result.hidden.begin() + config.dim);
        Check(backend.MedusaHeadTopK(roots, 1, topk, &ids));
      });
      print_common();
      std::printf(
          "\"bench\": \"medusa\", \"batch\": 1, \"context\": %d, \"tree_nodes\": %d, \"step_ms\": %.3f, "
          "\"plain_step_ms\": %.3f, \"overhead_ratio\": %.3f}\n",
          index, nodes, 1e3 * medusa, 1e3 * plain, medusa / plain);
    }
  }

  for (int b : {1, 2, 4, 8, 16, 32}) {
    Sequences many(&backend, b, slots_short, block_size);
    many.Prefill(128, config.vocab_size);
    int index = 128;
    const double plain = TimeSteps(o, [&] {
      many.DecodeBatch(index++, config.vocab_size, &batch);
      Check(backend.Forward(batch, &result));
    });
    const std::vector<int> parent = TreeParents(16);
    const double medusa = TimeSteps(o, [&] {
      many.TreeBatch(index, parent, config.vocab_size, &batch);
      Check(backend.Forward(batch, &result));
      roots.clear();
      for (int s = 0; s < b; ++s) {
        const auto row = result.hidden.begin() + static_cast<size_t>(s) * parent.size() * config.dim;
        roots.insert(roots.end(), row, row + config.dim);
      }
      Check(backend.MedusaHeadTopK(roots, b, topk, &ids));
    });
    print_common();
    std::printf(
        "\"bench\": \"batch\", \"batch\": %d, \"context\": 128, \"step_ms\": %.3f, \"tokens_per_second\": %.1f, "
        "\"tree_nodes\": 16, \"medusa_step_ms\": %.3f, \"overhead_ratio\": %.3f}\n",
        b, 1e3 * plain, b / plain, 1e3 * medusa, medusa / plain);
  }
  return 0;
}
