#include "tests/support/random_heads.h"

#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "engine/medusa/heads_file.h"
#include "engine/model/gguf.h"
#include "engine/model/loader.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace medusa {

MedusaHeadsWeights RandomMedusaHeads(const ModelConfig& config, int num_heads, int num_layers, bool with_projection,
                                     uint64_t seed, float scale, HeadKind kind) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale > 0.0f ? scale : 1.0f);
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.assign(n, 0.0f);
    if (scale > 0.0f) {
      for (float& x : v) x = normal(rng);
    }
  };
  MedusaHeadsWeights w;
  w.kind = kind;
  w.num_heads = num_heads;
  w.num_layers = num_layers;
  w.dim = config.dim;
  w.vocab = config.vocab_size;
  w.heads.resize(num_heads);
  const size_t dim = config.dim;
  for (int h = 0; h < num_heads; ++h) {
    MedusaHead& head = w.heads[h];
    head.blocks.resize(num_layers);
    for (int l = 0; l < num_layers; ++l) {
      fill(head.blocks[l].weight, dim * w.BlockInputs(h, l));
      fill(head.blocks[l].bias, dim);
    }
    if (with_projection) fill(head.projection, static_cast<size_t>(config.vocab_size) * dim);
  }
  return w;
}

namespace testing {

ModelConfig ConfigForHeads(const std::string& model_path) {
  ModelConfig config;
  if (absl::EndsWith(model_path, ".gguf")) {
    auto file = gguf::File::Open(model_path);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return config;
    config.dim = static_cast<int>(*(*file)->GetInt("llama.embedding_length"));
    config.vocab_size = static_cast<int>(*(*file)->ArrayLength("tokenizer.ggml.tokens"));
    return config;
  }
  auto model = LoadModel(model_path);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? model->config : config;
}

void WriteRandomHeads(const std::string& model_path, const std::string& path) {
  MedusaHeadsWeights heads = RandomMedusaHeads(ConfigForHeads(model_path), 5, 1, false, /*seed=*/7, 0.05f);
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr).ok());
}

}  // namespace testing
}  // namespace medusa
