// Decode and prefill speed of the CPU backend on a model of SmolLM2-135M's shape
// (random weights: speed does not depend on the values), or on a real model file.
//
//   cpu_backend_bench [--model PATH] [--weights auto|f32|f16|bf16|q8_0|q4_0|q4_1] [--threads N]
//                     [--context 128] [--prefill 128] [--steps 32] [--runs 5] [--verify-runs N]
//
// Prints the median over runs of decode tokens/s (one token at a time after a prefill of
// `context` tokens), prefill tokens/s (one batch of `prefill` tokens, last row's logits), and
// the time of one forward of a Medusa verification batch of T tokens after `context` (a
// chain: each node attends to the context and its ancestors; logits for every token), for T in --verify (default
// 1,4,8,16,32,64), median of --verify-runs (default --runs).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/model/loader.h"
#include "kernels/backend.h"
#include "tests/bench/bench_util.h"

namespace {

using medusa::ModelConfig;
using medusa::ModelWeights;
using namespace medusa::kernels;

ModelConfig SmolLm2Shape() {
  ModelConfig c;
  c.name = "smollm2-135m-shape";
  c.dim = 576;
  c.hidden_dim = 1536;
  c.n_layers = 30;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.vocab_size = 49152;
  c.max_seq_len = 8192;
  c.rms_eps = 1e-5f;
  c.rope_theta = 100000.0f;
  return c;
}

std::vector<float> Random(std::minstd_rand* rng, size_t n, float scale) {
  std::vector<float> v(n);
  for (float& x : v) x = scale * (static_cast<float>((*rng)()) / 2147483647.0f - 0.5f);
  return v;
}

ModelWeights RandomWeights(const ModelConfig& c) {
  std::minstd_rand rng(1);
  const float s = 2.0f / std::sqrt(static_cast<float>(c.dim));
  ModelWeights w;
  w.token_embedding = Random(&rng, static_cast<size_t>(c.vocab_size) * c.dim, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    medusa::LayerWeights L;
    L.attn_norm = std::vector<float>(c.dim, 1.0f);
    L.ffn_norm = std::vector<float>(c.dim, 1.0f);
    L.wq = Random(&rng, static_cast<size_t>(c.q_dim()) * c.dim, s);
    L.wk = Random(&rng, static_cast<size_t>(c.kv_dim()) * c.dim, s);
    L.wv = Random(&rng, static_cast<size_t>(c.kv_dim()) * c.dim, s);
    L.wo = Random(&rng, static_cast<size_t>(c.dim) * c.q_dim(), s);
    L.w_gate = Random(&rng, static_cast<size_t>(c.hidden_dim) * c.dim, s);
    L.w_up = Random(&rng, static_cast<size_t>(c.hidden_dim) * c.dim, s);
    L.w_down = Random(&rng, static_cast<size_t>(c.dim) * c.hidden_dim, s);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = std::vector<float>(c.dim, 1.0f);
  return w;
}

using medusa::bench::Check;
using medusa::bench::Median;
using medusa::bench::Seconds;

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, context = 128, prefill = 128, steps = 32, runs = 5, verify_runs = -1;
  std::string model_path, weights_mode = "auto";
  std::vector<int> verify_sizes = {1, 4, 8, 16, 32, 64};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::atoi(argv[i + 1]);
    if (flag == "--model") model_path = argv[i + 1];
    else if (flag == "--weights")
      weights_mode = argv[i + 1];
    else if (flag == "--threads") threads = value;
    else if (flag == "--context") context = value;
    else if (flag == "--prefill") prefill = value;
    else if (flag == "--steps") steps = value;
    else if (flag == "--runs") runs = value;
    else if (flag == "--verify-runs") verify_runs = value;
    else if (flag == "--verify") {
      verify_sizes.clear();
      for (const char* p = argv[i + 1]; *p != '\0';) {
        verify_sizes.push_back(std::atoi(p));
        while (*p != '\0' && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    }
  }
  const absl::StatusOr<medusa::WeightMode> mode = medusa::ParseWeightMode(weights_mode);
  Check(mode.status());
  ModelConfig config = SmolLm2Shape();
  ModelWeights weights;
  if (model_path.empty()) {
    weights = RandomWeights(config);
    medusa::ConvertWeights(config, *mode, &weights);
  } else {
    auto model = medusa::LoadModel(model_path, *mode);
    Check(model.status());
    config = model->config;
    weights = std::move(model->weights);
  }
  BackendOptions options{"cpu", threads};
  options.weights = weights_mode;
  auto created = CreateBackend(options);
  Check(created.status());
  Backend& backend = **created;
  Check(backend.LoadWeights(config, std::move(weights)));
  const int block_size = 16;
  if (verify_runs < 0) verify_runs = runs;
  const int max_verify = verify_sizes.empty() ? 0 : *std::max_element(verify_sizes.begin(), verify_sizes.end());
  const int slots = std::max({context + steps, prefill, context + max_verify});
  const int blocks = (slots + block_size - 1) / block_size;
  Check(backend.AllocateKvCache({blocks, block_size}));
  std::vector<int32_t> table(blocks);
  for (int b = 0; b < blocks; ++b) table[b] = blocks - 1 - b;  // out of order, as in real use

  auto causal_batch = [&](int first, int count, ForwardBatch* batch) {
    batch->Clear();
    batch->block_tables.push_back(table);
    for (int i = first; i < first + count; ++i) {
      BatchToken t;
      t.token = (i * 7919) % config.vocab_size;
      t.position = i;
      t.kv_index = i;
      t.attend_prefix = i + 1;
      batch->tokens.push_back(t);
    }
    batch->output_rows.push_back(count - 1);
  };
  // A Medusa verification batch: a chain of `count` nodes after `context`, each attending to
  // the context and, as extras, its ancestors and itself (all logits returned).
  auto tree_batch = [&](int count, ForwardBatch* batch) {
    batch->Clear();
    batch->block_tables.push_back(table);
    for (int i = 0; i < count; ++i) {
      BatchToken t;
      t.token = ((context + i) * 7919) % config.vocab_size;
      t.position = context + i;
      t.kv_index = context + i;
      t.attend_prefix = context;
      t.extra_begin = static_cast<int32_t>(batch->extra_indices.size());
      t.extra_count = i + 1;
      for (int a = 0; a <= i; ++a) batch->extra_indices.push_back(context + a);
      batch->tokens.push_back(t);
      batch->output_rows.push_back(i);
    }
  };

  ForwardBatch batch;
  ForwardResult result;
  std::vector<double> decode_rates, prefill_rates;
  for (int run = 0; run < runs; ++run) {
    causal_batch(0, prefill, &batch);
    const double t0 = Seconds();
    Check(backend.Forward(batch, &result));
    prefill_rates.push_back(prefill / (Seconds() - t0));

    causal_batch(0, context, &batch);
    Check(backend.Forward(batch, &result));
    const double t1 = Seconds();
    for (int s = 0; s < steps; ++s) {
      causal_batch(context + s, 1, &batch);
      Check(backend.Forward(batch, &result));
    }
    decode_rates.push_back(steps / (Seconds() - t1));
  }
  for (int size : verify_sizes) {
    std::vector<double> times;
    for (int run = 0; run < verify_runs; ++run) {
      tree_batch(size, &batch);
      const double t0 = Seconds();
      Check(backend.Forward(batch, &result));
      times.push_back(Seconds() - t0);
    }
    std::printf("verify batch of %2d tokens after %d: %.2f ms per forward\n", size, context, 1e3 * Median(times));
  }
  std::printf("weights %s: ", weights_mode.c_str());
  std::printf("%s, threads %d: decode %.1f tokens/s (context %d..%d), prefill %.1f tokens/s (batch %d), median of %d\n",
              config.name.c_str(), threads, Median(decode_rates), context, context + steps, Median(prefill_rates), prefill, runs);
  return 0;
}
