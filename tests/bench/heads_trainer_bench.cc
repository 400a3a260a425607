// Training speed of the heads trainer at SmolLM2-135M's shapes (dim 576, vocabulary
// 49,152, 4 heads of one ResBlock, batches of 64 rows, 2 threads) on random data: rows
// trained per second, with the classifier shared and with each head's own projection.
//
//   heads_trainer_bench

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/train/distill_set.h"
#include "engine/train/heads_trainer.h"
#include "tests/support/gradient_check.h"

namespace {

using medusa::DistillSet;
using medusa::HeadsTrainer;
using medusa::ModelConfig;
using medusa::TrainerOptions;
using medusa::TrainProgress;
using medusa::TrainRunOptions;

using medusa::testing::RandomVector;

DistillSet RandomData(int rows, int dim, int heads, int vocab, uint64_t seed) {
  DistillSet data;
  data.dim = dim;
  data.num_heads = heads;
  data.hidden = RandomVector(static_cast<size_t>(rows) * dim, seed, 1.0f);
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int> token(0, vocab - 1);
  for (int i = 0; i < rows * heads; ++i) data.targets.push_back(token(rng));
  return data;
}

void MeasureThroughput(bool share, int steps) {
  const int dim = 576, vocab = 49152, heads = 4, batch = 64;
  ModelConfig config;
  config.dim = dim;
  config.vocab_size = vocab;
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 1, 0.05f);
  const DistillSet data = RandomData(batch * steps, dim, heads, vocab, 2);
  TrainerOptions options;
  options.num_heads = heads;
  options.num_layers = 1;
  options.share_lm_head = share;
  options.batch_size = batch;
  options.threads = 2;
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, config, classifier);
  double rate = 0;
  TrainRunOptions run;
  run.progress_every_steps = steps;
  run.on_progress = [&](const TrainProgress& p) { rate = p.tokens_per_second; };
  const absl::Status trained = trainer.ok() ? trainer->Train(data, run) : trainer.status();
  if (!trained.ok()) {
    std::fprintf(stderr, "heads_trainer_bench: %s\n", std::string(trained.message()).c_str());
    std::exit(1);
  }
  std::printf("throughput (%s projection, dim %d, vocab %d, %d heads, batch %d, 2 threads): %.0f rows/s\n",
              share ? "shared" : "own", dim, vocab, heads, batch, rate);
}

}  // namespace

int main() {
  MeasureThroughput(/*share=*/true, 16);
  MeasureThroughput(/*share=*/false, 6);
  return 0;
}
