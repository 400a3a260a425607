// Hugging Face checkpoints (engine/model/hf_loader.cc) against fixtures made and checked by
// transformers (tests/reference/make_hf_fixtures.py): stories260K converted to the Hugging Face
// layout loads to the llama2.c file's weights bit for bit (so the same logits, and llama2.c's
// golden text); BF16 shards load to the BF16-rounded weights; a random Llama with grouped-query
// attention, an untied head and Llama 3's RoPE scaling gives transformers' logits; config.json's
// variants and every malformed checkpoint get a clear error naming the field, tensor or file.

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/model/hf_layout.h"
#include "engine/model/loader.h"
#include "engine/model/random_checkpoint.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "tests/support/commands.h"
#include "tests/support/forward_batches.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::kStoriesGolden;
using testing::kStoriesModel;
using testing::SourcePath;

const std::string kHfDir = SourcePath("tests/fixtures/hf");

json Reference() {
  std::ifstream in(kHfDir + "/reference.json");
  return json::parse(in);
}

LoadedModel MustLoad(const std::string& path) {
  absl::StatusOr<LoadedModel> model = LoadModel(path);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : LoadedModel{};
}

// Every output row's logits of one causal pass over `ids` on the CPU backend.
std::vector<float> Logits(LoadedModel model, const std::vector<int>& ids) {
  auto backend = kernels::CreateBackend(kernels::BackendOptions{"cpu", 2});
  EXPECT_TRUE(backend.ok()) << backend.status();
  EXPECT_TRUE((*backend)->LoadWeights(model.config, std::move(model.weights)).ok());
  const int blocks = static_cast<int>(ids.size() + 15) / 16;
  EXPECT_TRUE((*backend)->AllocateKvCache({blocks, 16}).ok());
  std::vector<int32_t> table(blocks);
  for (int b = 0; b < blocks; ++b) table[b] = b;
  kernels::ForwardBatch batch;
  batch.block_tables.push_back(table);
  testing::AddCausal(&batch, 0, ids, 0, static_cast<int>(ids.size()));
  kernels::ForwardResult result;
  EXPECT_TRUE((*backend)->Forward(batch, &result).ok());
  return result.logits;
}

// Largest difference from transformers' float64 logits over the largest logit (at least 1).
double ErrorAgainst(const std::vector<float>& got, const json& want) {
  double diff = 0, scale = 1;
  size_t i = 0;
  for (const json& row : want) {
    for (const json& v : row) {
      diff = std::max(diff, std::abs(got[i++] - v.get<double>()));
      scale = std::max(scale, std::abs(v.get<double>()));
    }
  }
  EXPECT_EQ(i, got.size());
  return diff / scale;
}

float RoundToBfloat16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000u;
  std::memcpy(&x, &bits, 4);
  return x;
}

TEST(HfCheckpointTest, Stories260KLoadsToTheLlama2cWeightsBitForBit) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  LoadedModel hf = MustLoad(kHfDir + "/stories260k");
  LoadedModel bin = MustLoad(kStoriesModel);
  EXPECT_EQ(hf.format, ModelFormat::kHuggingFace);
  EXPECT_EQ(hf.config.dim, bin.config.dim);
  EXPECT_EQ(hf.config.n_kv_heads, bin.config.n_kv_heads);
  EXPECT_EQ(hf.config.vocab_size, bin.config.vocab_size);
  EXPECT_EQ(hf.config.tied_classifier, bin.config.tied_classifier);
  EXPECT_EQ(hf.weights.token_embedding, bin.weights.token_embedding);
  ASSERT_EQ(hf.weights.layers.size(), bin.weights.layers.size());
  for (size_t l = 0; l < hf.weights.layers.size(); ++l) {
    const LayerWeights &a = hf.weights.layers[l], &b = bin.weights.layers[l];
    EXPECT_EQ(a.wq, b.wq) << "layer " << l << ": Q rows not back in adjacent-pair order";
    EXPECT_EQ(a.wk, b.wk) << "layer " << l;
    EXPECT_EQ(a.wv, b.wv) << "layer " << l;
    EXPECT_EQ(a.wo, b.wo) << "layer " << l;
    EXPECT_EQ(a.w_gate, b.w_gate) << "layer " << l;
    EXPECT_EQ(a.w_up, b.w_up) << "layer " << l;
    EXPECT_EQ(a.w_down, b.w_down) << "layer " << l;
    EXPECT_EQ(a.attn_norm, b.attn_norm) << "layer " << l;
    EXPECT_EQ(a.ffn_norm, b.ffn_norm) << "layer " << l;
  }
  EXPECT_EQ(hf.weights.final_norm, bin.weights.final_norm);

  const json reference = Reference()["stories260k"];
  const std::vector<int> ids = reference["ids"].get<std::vector<int>>();
  const std::vector<float> from_hf = Logits(std::move(hf), ids);
  EXPECT_EQ(from_hf, Logits(std::move(bin), ids)) << "the same weights must give the same bits";
  EXPECT_LT(ErrorAgainst(from_hf, reference["logits"]), 1e-4);
}

// The directory alone serves: its tokenizer.model is found inside, and greedy decoding gives
// llama2.c's golden text.
TEST(HfCheckpointTest, Stories260KDirectoryGeneratesTheGoldenText) {
  ASSERT_MODEL_PRESENT(kStoriesGolden);
  EngineOptions options;
  options.model_path = kHfDir + "/stories260k";
  options.backend.threads = 2;
  options.kv_cache_bytes = 16ll << 20;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationRequest request;
  request.prompt_ids = {1};
  request.max_tokens = 200;
  request.ignore_eos = true;
  auto result = Generate(**engine, request);
  ASSERT_TRUE(result.ok()) << result.status();
  std::ifstream golden(kStoriesGolden);
  EXPECT_EQ(result->text, std::string(std::istreambuf_iterator<char>(golden), {}));
}

// --weights auto keeps a BF16 checkpoint's matrices in 16 bits: their values
// are the float32 load's, bit for bit, and Q/K rows are still interleaved for
// adjacent-pair RoPE.
TEST(HfCheckpointTest, AutoModeKeepsBf16Matrices) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  LoadedModel full = MustLoad(kHfDir + "/stories260k_bf16_sharded");
  absl::StatusOr<LoadedModel> kept = LoadModel(kHfDir + "/stories260k_bf16_sharded", WeightMode::kAuto);
  ASSERT_TRUE(kept.ok()) << kept.status();
  const ModelConfig& c = kept->config;
  EXPECT_EQ(kept->weights.token_embedding.type, WeightType::kBF16);
  EXPECT_EQ(kept->weights.token_embedding.ToFloat(c.vocab_size, c.dim), full.weights.token_embedding.values);
  for (size_t l = 0; l < kept->weights.layers.size(); ++l) {
    const LayerWeights& a = kept->weights.layers[l];
    const LayerWeights& b = full.weights.layers[l];
    EXPECT_EQ(a.wq.type, WeightType::kBF16);
    EXPECT_EQ(a.wq.ToFloat(c.q_dim(), c.dim), b.wq.values) << "layer " << l;
    EXPECT_EQ(a.wk.ToFloat(c.kv_dim(), c.dim), b.wk.values) << "layer " << l;
    EXPECT_EQ(a.w_down.ToFloat(c.dim, c.hidden_dim), b.w_down.values) << "layer " << l;
    EXPECT_EQ(a.attn_norm, b.attn_norm);
  }
}

TEST(HfCheckpointTest, Bf16ShardsLoadToTheRoundedWeights) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  LoadedModel hf = MustLoad(kHfDir + "/stories260k_bf16_sharded");
  LoadedModel bin = MustLoad(kStoriesModel);
  auto rounded = [](const WeightMatrix& m) {
    std::vector<float> v = m.values;
    for (float& x : v) x = RoundToBfloat16(x);
    return WeightMatrix(v);
  };
  EXPECT_EQ(hf.weights.token_embedding, rounded(bin.weights.token_embedding));
  for (size_t l = 0; l < hf.weights.layers.size(); ++l) {
    EXPECT_EQ(hf.weights.layers[l].wq, rounded(bin.weights.layers[l].wq)) << "layer " << l;
    EXPECT_EQ(hf.weights.layers[l].wk, rounded(bin.weights.layers[l].wk)) << "layer " << l;
    EXPECT_EQ(hf.weights.layers[l].w_down, rounded(bin.weights.layers[l].w_down)) << "layer " << l;
  }
}

TEST(HfCheckpointTest, RandomLlama3WithGqaAndUntiedHeadMatchesTransformers) {
  LoadedModel model = MustLoad(kHfDir + "/tiny_llama3");
  EXPECT_EQ(model.config.n_heads, 4);
  EXPECT_EQ(model.config.n_kv_heads, 2);
  EXPECT_FALSE(model.config.tied_classifier);
  EXPECT_EQ(model.config.rope_theta, 500000.0f);
  EXPECT_EQ(model.config.rope_scaling.factor, 8.0f);
  EXPECT_EQ(model.config.rope_scaling.original_context, 64);
  const json reference = Reference()["tiny_llama3"];
  const std::vector<float> logits = Logits(std::move(model), reference["ids"].get<std::vector<int>>());
  EXPECT_LT(ErrorAgainst(logits, reference["logits"]), 1e-4);

  // Without the scaling the frequencies differ and so do the logits: the test can fail.
  LoadedModel plain = MustLoad(kHfDir + "/tiny_llama3");
  plain.config.rope_scaling.factor = 0.0f;
  EXPECT_GT(ErrorAgainst(Logits(std::move(plain), reference["ids"].get<std::vector<int>>()), reference["logits"]),
            1e-3);
}

json LlamaConfigJson() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}})");
}

// transformers 4's config.json (rope_theta and rope_scaling beside the other fields, as most
// published checkpoints have it) and its variants.
TEST(HfCheckpointTest, ConfigVariantsAndRefusals) {
  absl::StatusOr<ModelConfig> c = ParseHuggingFaceConfig(LlamaConfigJson(), "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->rope_scaling.factor, 32.0f);
  EXPECT_EQ(c->rope_scaling.original_context, 8192);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_FALSE(c->tied_classifier);

  json mistral = LlamaConfigJson();
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral.erase("rope_scaling");
  mistral["sliding_window"] = 1024;
  mistral["tie_word_embeddings"] = true;
  c = ParseHuggingFaceConfig(mistral, "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_seq_len, 1024) << "no context past the sliding window";
  EXPECT_EQ(c->rope_scaling.factor, 0.0f);
  EXPECT_TRUE(c->tied_classifier);

  struct Case {
    const char* what;
    void (*edit)(json&);
    absl::StatusCode code;
    const char* mentions;
  };
  const Case cases[] = {
      {"architecture", [](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }, absl::StatusCode::kUnimplemented,
       "GPT2LMHeadModel"},
      {"no hidden_size", [](json& j) { j.erase("hidden_size"); }, absl::StatusCode::kInvalidArgument, "hidden_size"},
      {"bad heads", [](json& j) { j["num_attention_heads"] = -4; }, absl::StatusCode::kInvalidArgument,
       "num_attention_heads"},
      {"kv heads", [](json& j) { j["num_key_value_heads"] = 3; }, absl::StatusCode::kInvalidArgument, "n_kv_heads"},
      {"yarn",
       [](json& j) {
         j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
       },
       absl::StatusCode::kUnimplemented, "yarn"},
      {"bias", [](json& j) { j["attention_bias"] = true; }, absl::StatusCode::kUnimplemented, "attention_bias"},
      {"theta", [](json& j) { j["rope_theta"] = "big"; }, absl::StatusCode::kInvalidArgument, "rope_theta"},
  };
  for (const Case& k : cases) {
    json j = LlamaConfigJson();
    k.edit(j);
    const absl::Status s = ParseHuggingFaceConfig(j, "x").status();
    EXPECT_EQ(s.code(), k.code) << k.what << ": " << s;
    EXPECT_TRUE(absl::StrContains(s.message(), k.mentions)) << k.what << ": " << s;
  }
}

// A copy of a fixture checkpoint in a temporary directory, to break.
fs::path CopyOf(const testing::TempDir& dir, const std::string& name) {
  const fs::path to = dir.file(name);
  fs::copy(kHfDir + "/" + name, to, fs::copy_options::recursive);
  return to;
}

void EditJson(const fs::path& path, void (*edit)(json&)) {
  std::ifstream in(path);
  json j = json::parse(in);
  in.close();
  edit(j);
  std::ofstream(path) << j.dump();
}

TEST(HfCheckpointTest, BrokenCheckpointsNameWhatIsWrong) {
  testing::TempDir dir;
  auto expect = [](const fs::path& path, absl::StatusCode code, const std::string& mentions) {
    const absl::Status s = LoadModel(path.string()).status();
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), mentions)) << s;
  };
  {  // an index entry dropped: the tensor is missing
    const fs::path p = CopyOf(dir, "stories260k_bf16_sharded");
    EditJson(p / "model.safetensors.index.json",
             [](json& j) { j["weight_map"].erase("model.layers.1.mlp.up_proj.weight"); });
    expect(p, absl::StatusCode::kInvalidArgument, "model.layers.1.mlp.up_proj.weight");
    fs::remove_all(p);
  }
  {  // a shard gone
    const fs::path p = CopyOf(dir, "stories260k_bf16_sharded");
    fs::remove(p / "model-00002-of-00003.safetensors");
    expect(p, absl::StatusCode::kNotFound, "model-00002-of-00003.safetensors");
    fs::remove_all(p);
  }
  {  // the index points a tensor at the wrong shard
    const fs::path p = CopyOf(dir, "stories260k_bf16_sharded");
    EditJson(p / "model.safetensors.index.json", [](json& j) {
      j["weight_map"]["model.norm.weight"] = j["weight_map"]["model.norm.weight"] == "model-00001-of-00003.safetensors"
                                                 ? "model-00002-of-00003.safetensors"
                                                 : "model-00001-of-00003.safetensors";
    });
    expect(p, absl::StatusCode::kInvalidArgument, "model.norm.weight");
    fs::remove_all(p);
  }
  {  // config.json disagrees with the tensors: the shape error names tensor and file
    const fs::path p = CopyOf(dir, "stories260k");
    EditJson(p / "config.json", [](json& j) { j["intermediate_size"] = 100; });
    expect(p, absl::StatusCode::kInvalidArgument, "model.safetensors");
    fs::remove_all(p);
  }
  {  // no weights at all
    const fs::path p = CopyOf(dir, "stories260k");
    fs::remove(p / "model.safetensors");
    expect(p, absl::StatusCode::kNotFound, "model.safetensors");
    fs::remove_all(p);
  }
  {  // no config.json
    const fs::path p = CopyOf(dir, "stories260k");
    fs::remove(p / "config.json");
    expect(p, absl::StatusCode::kNotFound, "config.json");
    fs::remove_all(p);
  }
  {  // a corrupt shard: the safetensors reader's checks
    const fs::path p = CopyOf(dir, "stories260k");
    fs::resize_file(p / "model.safetensors", 1000);
    expect(p, absl::StatusCode::kInvalidArgument, "model.safetensors");
    fs::remove_all(p);
  }
}

// A checkpoint of `config`'s shape in F16 whose one shard is a valid header over a sparse file
// (no disk blocks, every value 0): real shapes at any size.
void WriteSparseCheckpoint(const fs::path& dir, const json& config) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump();
  const absl::StatusOr<ModelConfig> shape = ParseHuggingFaceConfig(config, dir.string());
  ASSERT_TRUE(shape.ok()) << shape.status();
  json header = json::object();
  uint64_t offset = 0;
  for (const HfTensor& t : HfTensors(*shape)) {
    uint64_t bytes = 2;
    for (int64_t d : t.shape) bytes *= d;
    header[t.name] = {{"dtype", "F16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  const uint64_t length = text.size();
  {
    std::ofstream out(dir / "model.safetensors", std::ios::binary);
    out.write(reinterpret_cast<const char*>(&length), 8);
    out << text;
  }
  fs::resize_file(dir / "model.safetensors", 8 + length + offset);
}

// Weights that cannot fit are refused after their shapes are checked and before any is read,
// naming the memory they need (a Llama-2-70B shape: 276 GB as float32, more than any machine
// here has; its 138 GB shard is sparse).
TEST(HfCheckpointTest, WeightsThatCannotFitAreRefusedBeforeLoading) {
  testing::TempDir dir;
  const fs::path p = dir.file("llama70b");
  const json config = json::parse(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5})");
  WriteSparseCheckpoint(p, config);
  const absl::Status s = LoadModel(p.string()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "GiB")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "68.98 billion parameters")) << s;

  // The same checkpoint with a wrong shape fails on the shape first.
  json wrong = config;
  wrong["intermediate_size"] = 28000;
  std::ofstream(p / "config.json") << wrong.dump();
  const absl::Status shape = LoadModel(p.string()).status();
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument) << shape;
  EXPECT_TRUE(absl::StrContains(shape.message(), "mlp.gate_proj")) << shape;
}

// `medusa make-model` writes random checkpoints of real shapes that the loader reads back as
// the shape says, deterministic in the seed, whose activations neither vanish nor overflow
// through every layer (SmolLM2-135M's 30 layers here; the 7B shapes in BENCHMARKS.md).
TEST(HfCheckpointTest, MakeModelWritesCheckpointsTheLoaderReads) {
  testing::TempDir dir;
  for (const char* dtype : {"f32", "bf16"}) {
    for (const char* shape : {"tiny", "smollm2-135m"}) {
      const std::string out = dir.file(std::string(shape) + "_" + dtype);
      const json report = testing::RunJsonCommand(testing::BinaryPath("bin/medusa") + " make-model --shape " + shape +
                                                  " --dtype " + dtype + " --seed 3 --json --out " + out);
      ASSERT_EQ(report.value("shape", ""), shape) << report.dump();
      LoadedModel model = MustLoad(out);
      const absl::StatusOr<ModelConfig> want = KnownShape(shape);
      ASSERT_TRUE(want.ok());
      EXPECT_EQ(model.config.dim, want->dim);
      EXPECT_EQ(model.config.n_layers, want->n_layers);
      EXPECT_EQ(model.config.n_kv_heads, want->n_kv_heads);
      EXPECT_EQ(model.config.tied_classifier, want->tied_classifier);
      int64_t params = static_cast<int64_t>(model.weights.token_embedding.values.size() +
                                            model.weights.final_norm.size() + model.weights.classifier.values.size());
      for (const LayerWeights& l : model.weights.layers) {
        params += l.wq.values.size() + l.wk.values.size() + l.wv.values.size() + l.wo.values.size() +
                  l.w_gate.values.size() + l.w_up.values.size() + l.w_down.values.size() + l.attn_norm.size() +
                  l.ffn_norm.size();
      }
      EXPECT_EQ(report["parameters"].get<int64_t>(), params);
      const std::vector<float> logits = Logits(std::move(model), {1, 5, 9, 17, 33, 65, 2, 3});
      double sum = 0, squares = 0;
      for (float v : logits) {
        ASSERT_TRUE(std::isfinite(v)) << shape << " " << dtype;
        sum += v;
        squares += static_cast<double>(v) * v;
      }
      const double sd = std::sqrt(squares / logits.size() - (sum / logits.size()) * (sum / logits.size()));
      EXPECT_GT(sd, 0.05) << shape << " " << dtype << ": the activations vanished";
      EXPECT_LT(sd, 100.0) << shape << " " << dtype << ": the activations blew up";
    }
  }
  // The same seed writes the same bytes; another seed other values.
  const std::string again = dir.file("again"), other = dir.file("other");
  testing::RunJsonCommand(testing::BinaryPath("bin/medusa") +
                          " make-model --shape tiny --dtype f32 --seed 3 --json --out " + again);
  testing::RunJsonCommand(testing::BinaryPath("bin/medusa") +
                          " make-model --shape tiny --dtype f32 --seed 4 --json --out " + other);
  EXPECT_EQ(MustLoad(again).weights.layers[1].w_up, MustLoad(dir.file("tiny_f32")).weights.layers[1].w_up);
  EXPECT_NE(MustLoad(other).weights.layers[1].w_up, MustLoad(dir.file("tiny_f32")).weights.layers[1].w_up);
  const testing::CommandOutput unknown =
      testing::RunCommand(testing::BinaryPath("bin/medusa") + " make-model --shape llama-9 --out " + dir.file("x"));
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(unknown.output, "llama-2-7b")) << unknown.output;
}

// SmolLM2 written in Hugging Face's layout by `medusa make-model --from` (its Q4_1 GGUF
// dequantized to float32, Q/K rows back in rotate-half order), with its tokenizer.json and
// chat template, then served from that directory: its logits are the GGUF's bit for bit, the
// chat prompts encode to transformers' ids
// and the greedy answers are transformers' on the same checkpoint, token for token
// (tests/reference/make_smollm2_hf_greedy.py; it also checks the export against transformers'
// own reading of the GGUF).
TEST(HfCheckpointTest, SmolLM2FromItsHfCheckpointAnswersAsTransformers) {
  ASSERT_MODEL_PRESENT(testing::kSmolModel);
  testing::TempDir dir;
  const std::string out = dir.file("smollm2_hf");
  const json report = testing::RunJsonCommand(testing::BinaryPath("bin/medusa") + " make-model --from " +
                                              testing::kSmolModel + " --dtype f32 --json --out " + out);
  ASSERT_EQ(report.value("from", ""), testing::kSmolModel) << report.dump();
  for (const auto& file : fs::directory_iterator(kHfDir + "/smollm2_tokenizer")) {
    fs::copy_file(file.path(), fs::path(out) / file.path().filename());
  }
  // The same weights as GGUF and as a Hugging Face checkpoint: bitwise the same logits.
  const std::vector<int> probe = {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 2, 198, 1, 4093, 198, 31530};
  EXPECT_EQ(Logits(MustLoad(testing::kSmolModel), probe), Logits(MustLoad(out), probe));
  std::ifstream in(SourcePath("tests/fixtures/smollm2_hf_greedy.json"));
  const json fixture = json::parse(in);
  EngineOptions options;
  options.model_path = out;
  options.kv_cache_bytes = 64ll << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  int prompts = 0, identical = 0;
  for (const json& prompt : fixture["prompts"]) {
    const std::vector<ChatMessage> chat = {{"user", prompt["instruction"].get<std::string>()}};
    absl::StatusOr<std::vector<int32_t>> ids = EncodeChat((*engine)->tokenizer(), chat);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, prompt["input_ids"].get<std::vector<int32_t>>()) << prompt["instruction"];
    GenerationRequest request;
    request.prompt_ids = prompt["input_ids"].get<std::vector<int32_t>>();
    request.max_tokens = fixture["new_tokens"].get<int>();
    request.ignore_eos = true;  // the fixture's generate ran with eos_token_id=None
    absl::StatusOr<GenerationResult> result = Generate(**engine, request);
    ASSERT_TRUE(result.ok()) << result.status();
    const auto want = prompt["greedy_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(result->token_ids, want) << prompt["instruction"];
    identical += result->token_ids == want;
    ++prompts;
  }
  EXPECT_GE(prompts, 20);
  std::printf("%d of %d greedy answers identical to transformers'\n", identical, prompts);
  // --chat-template names a family; another name fails at start-up, naming the families.
  const testing::CommandOutput unknown = testing::RunCommand(testing::BinaryPath("bin/medusa") + " generate --model " +
                                                             out + " --chat --chat-template alpaca --prompt Hi");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(unknown.output, "llama-2")) << unknown.output;
  const testing::CommandOutput zephyr =
      testing::RunCommand(testing::BinaryPath("bin/medusa") + " generate --model " + out +
                          " --chat --chat-template zephyr --prompt Hi --max-tokens 2");
  EXPECT_EQ(zephyr.exit_code, 0) << zephyr.output;
}

}  // namespace
}  // namespace medusa
