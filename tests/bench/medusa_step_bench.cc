// Per-step cost of the Medusa data-structure pieces, outside the model's forward pass:
// top-k over a vocabulary row, candidate building for a tree, greedy and typical
// acceptance over the tree's verification rows, and the reference CPU head math.
//
//   medusa_step_bench [--vocab 32000] [--dim 576] [--heads 4] [--tree default] [--iters 200]
//
// Prints the median microseconds per call of each piece (random inputs; the costs do
// not depend on the values, except acceptance, which is measured with verification rows
// that accept a few tokens, as in real decoding).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/medusa/acceptance.h"
#include "engine/medusa/candidates.h"
#include "engine/medusa/tree.h"
#include "tests/support/random_heads.h"
#include "tests/support/reference_heads.h"

namespace {

double MedianMicros(int iters, const std::function<void()>& fn) {
  std::vector<double> times;
  fn();  // warm-up: buffers grow once
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int vocab = 32000, dim = 576, heads = 4, iters = 200;
  std::string tree_name = "default";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--vocab")) vocab = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--dim")) dim = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--heads")) heads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--tree")) tree_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  }
  absl::StatusOr<medusa::MedusaTree> tree = medusa::LoadTree(tree_name, heads);
  if (!tree.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tree.status().message()).c_str());
    return 1;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> head_logits(static_cast<size_t>(heads) * vocab);
  for (float& x : head_logits) x = normal(rng);
  std::printf("vocab %d, dim %d, %d heads, tree '%s' (%d nodes, depth %d)\n", vocab, dim, heads,
              tree_name.c_str(), tree->num_nodes(), tree->max_depth());

  medusa::TopK topk;
  std::vector<int32_t> ids(10);
  std::printf("top-10 of one row:            %8.1f us\n",
              MedianMicros(iters, [&] { topk.Select(absl::MakeConstSpan(head_logits).subspan(0, vocab), absl::MakeSpan(ids)); }));

  medusa::CandidateBuilder builder = *medusa::CandidateBuilder::Create(*tree, vocab);
  std::printf("candidates (all heads' top-k): %8.1f us\n",
              MedianMicros(iters, [&] { (void)builder.Build(1, head_logits); }));

  // Verification rows: each node's row prefers its first child's token, so the first
  // child chain is accepted (the common case of a good head).
  std::vector<float> logits(static_cast<size_t>(tree->num_nodes()) * vocab);
  for (float& x : logits) x = normal(rng);
  for (int n = 0; n < tree->num_nodes(); ++n) {
    if (!tree->is_leaf(n)) logits[static_cast<size_t>(n) * vocab + builder.node_tokens()[tree->children(n)[0]]] = 100.0f;
  }
  medusa::Acceptor acceptor(*tree, vocab);
  std::printf("greedy acceptance:             %8.1f us\n",
              MedianMicros(iters, [&] { (void)acceptor.AcceptGreedy(builder.node_tokens(), logits); }));
  medusa::Sampler sampler(medusa::SamplingParams{.temperature = 0.7f, .seed = 1});
  std::printf("typical acceptance (T 0.7):    %8.1f us\n",
              MedianMicros(iters, [&] { (void)acceptor.AcceptTypical(builder.node_tokens(), logits, sampler); }));
  volatile double sink = 0;
  std::printf("  of which one row's stats:    %8.1f us\n", MedianMicros(iters, [&] {
                sink = medusa::ComputeTypicalRowStats(absl::MakeConstSpan(logits).subspan(0, vocab), 0.7, {}).entropy;
              }));
  std::printf("  and the bonus sample (T 0.7):%8.1f us\n", MedianMicros(iters, [&] {
                sink = sampler.Sample(absl::MakeConstSpan(logits).subspan(0, vocab));
              }));

  medusa::ModelConfig config;
  config.dim = dim;
  config.vocab_size = vocab;
  medusa::MedusaHeadsWeights weights = medusa::RandomMedusaHeads(config, heads, 1, false, 1, 0.02f);
  std::vector<float> classifier(static_cast<size_t>(vocab) * dim);
  for (float& x : classifier) x = normal(rng) * 0.02f;
  std::vector<float> hidden(dim), out(static_cast<size_t>(heads) * vocab), scratch;
  for (float& x : hidden) x = normal(rng);
  std::printf("head logits (reference CPU):   %8.1f us\n",
              MedianMicros(std::max(5, iters / 20), [&] {
                (void)medusa::ComputeHeadLogits(weights, classifier, hidden, absl::MakeSpan(out), &scratch);
              }));
  return 0;
}
