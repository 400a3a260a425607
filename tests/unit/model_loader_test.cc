// Model loaders: real checkpoints (stories260K in llama2.c format, SmolLM2 in GGUF)
// against values read by independent programs (numpy, gguf-py; see
// tests/reference/make_gguf_fixtures.py), and broken files that must give clear errors.

#include <cmath>
#include <cstring>
#include <functional>

#include "engine/model/loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/model_test_util.h"

namespace medusa {
namespace {

using ::medusa::testing_util::GgufBuilder;
using ::medusa::testing_util::Put;
using ::medusa::testing_util::ReadBytes;
using ::medusa::testing_util::SourcePath;
using ::medusa::testing_util::WriteTemp;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kStoriesPath = SourcePath("models/stories260K/stories260K.bin");
const std::string kSmolPath = SourcePath("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");

const nlohmann::json& Samples() {
  static const nlohmann::json* samples = new nlohmann::json(
      nlohmann::json::parse(ReadBytes(SourcePath("tests/fixtures/model_weight_samples.json"))));
  return *samples;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

uint32_t ToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Compares our values with a sample recorded by the reference script: the first
// values and values at random indices, bit for bit.
void ExpectMatchesSample(const std::vector<float>& values, const nlohmann::json& sample,
                         const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(values.size(), sample["num_elements"].get<size_t>());
  std::vector<uint32_t> first = sample["first_bits"];
  for (size_t i = 0; i < first.size(); ++i) {
    ASSERT_EQ(ToBits(values[i]), first[i]) << "element " << i << " = " << values[i];
  }
  std::vector<size_t> indices = sample["indices"];
  std::vector<uint32_t> at = sample["index_bits"];
  for (size_t k = 0; k < indices.size(); ++k) {
    ASSERT_EQ(ToBits(values[indices[k]]), at[k]) << "element " << indices[k];
  }
}

bool AllFinite(const std::vector<float>& v) {
  for (float x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

// ------------------------------------------------------------------ ModelConfig

ModelConfig GoodConfig() {
  ModelConfig c;
  c.dim = 64;
  c.hidden_dim = 172;
  c.n_layers = 5;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  c.max_seq_len = 512;
  return c;
}

TEST(ModelConfigTest, ValidConfigPasses) { EXPECT_TRUE(GoodConfig().Validate().ok()); }

TEST(ModelConfigTest, EachBadFieldIsNamed) {
  const struct {
    void (*mutate)(ModelConfig&);
    const char* field;
  } cases[] = {
      {[](ModelConfig& c) { c.dim = 0; }, "dim must be positive"},
      {[](ModelConfig& c) { c.hidden_dim = -1; }, "hidden_dim"},
      {[](ModelConfig& c) { c.n_layers = 0; }, "n_layers"},
      {[](ModelConfig& c) { c.n_heads = 0; }, "n_heads"},
      {[](ModelConfig& c) { c.n_kv_heads = 0; }, "n_kv_heads"},
      {[](ModelConfig& c) { c.head_dim = 0; }, "head_dim"},
      {[](ModelConfig& c) { c.vocab_size = -5; }, "vocab_size"},
      {[](ModelConfig& c) { c.max_seq_len = 0; }, "max_seq_len"},
      {[](ModelConfig& c) { c.n_kv_heads = 3; }, "must be a multiple of n_kv_heads"},
      {[](ModelConfig& c) { c.n_kv_heads = 16; }, "must be a multiple of n_kv_heads"},
      {[](ModelConfig& c) { c.head_dim = 7; }, "head_dim (7) must be even"},
      {[](ModelConfig& c) { c.dim = 1 << 30; }, "dim = 1073741824 exceeds"},
      {[](ModelConfig& c) {
         c.n_heads = 1 << 13;
         c.head_dim = 1 << 12;
       },
       "q_dim"},
      {[](ModelConfig& c) { c.rms_eps = 0; }, "rms_eps"},
      {[](ModelConfig& c) { c.rope_theta = NAN; }, "rope_theta"},
  };
  for (const auto& t : cases) {
    ModelConfig c = GoodConfig();
    t.mutate(c);
    absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << t.field;
    EXPECT_THAT(Message(s), HasSubstr(t.field));
  }
}

// ------------------------------------------------------------------ llama2.c

TEST(Llama2cLoaderTest, Stories260KConfigMatchesItsReadme) {
  absl::StatusOr<LoadedModel> model = LoadModel(kStoriesPath);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->format, ModelFormat::kLlama2c);
  EXPECT_EQ(model->gguf, nullptr);
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.name, "stories260K");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_seq_len, 512);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.rms_eps, 1e-5f);
  EXPECT_TRUE(c.tied_classifier);
  std::vector<int> header = Samples()["stories260K"]["header"];
  EXPECT_EQ(header, (std::vector<int>{64, 172, 5, 8, 4, 512, 512}));
}

TEST(Llama2cLoaderTest, Stories260KWeightsMatchNumpyLayout) {
  absl::StatusOr<LoadedModel> model = LoadLlama2c(kStoriesPath);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelWeights& w = model->weights;
  ASSERT_EQ(w.layers.size(), 5u);
  EXPECT_TRUE(w.classifier.empty());
  for (const LayerWeights& l : w.layers) {
    EXPECT_EQ(l.attn_norm.size(), 64u);
    EXPECT_EQ(l.wq.values.size(), 64u * 64);
    EXPECT_EQ(l.wk.values.size(), 32u * 64);
    EXPECT_EQ(l.wv.values.size(), 32u * 64);
    EXPECT_EQ(l.wo.values.size(), 64u * 64);
    EXPECT_EQ(l.ffn_norm.size(), 64u);
    EXPECT_EQ(l.w_gate.values.size(), 172u * 64);
    EXPECT_EQ(l.w_down.values.size(), 64u * 172);
    EXPECT_EQ(l.w_up.values.size(), 172u * 64);
  }
  const nlohmann::json& s = Samples()["stories260K"];
  ExpectMatchesSample(w.token_embedding.values, s["token_embedding"], "token_embedding");
  ExpectMatchesSample(w.final_norm, s["rms_final"], "rms_final");
  ExpectMatchesSample(w.layers[0].wq.values, s["layers.0.wq"], "wq[0]");
  ExpectMatchesSample(w.layers[4].wk.values, s["layers.4.wk"], "wk[4]");
  ExpectMatchesSample(w.layers[2].wv.values, s["layers.2.wv"], "wv[2]");
  ExpectMatchesSample(w.layers[3].wo.values, s["layers.3.wo"], "wo[3]");
  ExpectMatchesSample(w.layers[1].attn_norm, s["layers.1.rms_att"], "rms_att[1]");
  ExpectMatchesSample(w.layers[4].ffn_norm, s["layers.4.rms_ffn"], "rms_ffn[4]");
  ExpectMatchesSample(w.layers[1].w_gate.values, s["layers.1.w1"], "w1[1] -> w_gate");
  ExpectMatchesSample(w.layers[2].w_down.values, s["layers.2.w2"], "w2[2] -> w_down");
  ExpectMatchesSample(w.layers[3].w_up.values, s["layers.3.w3"], "w3[3] -> w_up");
}

TEST(Llama2cLoaderTest, NegativeVocabMeansSeparateClassifier) {
  std::string bytes = ReadBytes(kStoriesPath);
  Put<int32_t>(bytes, 20, -512);
  // The classifier goes after everything else: here a recognizable ramp.
  std::vector<float> classifier(512 * 64);
  for (size_t i = 0; i < classifier.size(); ++i) classifier[i] = static_cast<float>(i) * 0.25f;
  bytes.append(reinterpret_cast<const char*>(classifier.data()), classifier.size() * 4);
  absl::StatusOr<LoadedModel> model = LoadModel(WriteTemp("untied.bin", bytes));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(model->config.tied_classifier);
  EXPECT_EQ(model->config.vocab_size, 512);
  EXPECT_EQ(model->weights.classifier, classifier);
}

struct Llama2cBroken {
  const char* what;
  size_t field;  // header int32 index, or -1 for none
  int32_t value;
  std::vector<std::string> message_parts;
};

TEST(Llama2cLoaderTest, BrokenHeadersAreRejected) {
  const Llama2cBroken cases[] = {
      {"zero dim", 0, 0, {"dim must be positive (got 0)"}},
      {"negative hidden_dim", 1, -172, {"hidden_dim must be positive"}},
      {"zero layers", 2, 0, {"n_layers must be positive"}},
      {"negative heads", 3, -8, {"n_heads must be positive"}},
      {"zero kv heads", 4, 0, {"n_kv_heads must be positive"}},
      {"zero vocab", 5, 0, {"vocab_size"}},
      {"INT_MIN vocab", 5, INT32_MIN, {"vocab_size"}},
      {"negative seq_len", 6, -1, {"seq_len must be positive"}},
      {"heads not divisible by kv heads",
       4,
       3,
       {"n_heads (8) must be a multiple of n_kv_heads (3)"}},
      {"dim not divisible by heads", 3, 7, {"dim (64) is not a multiple of n_heads (7)"}},
      {"huge dim", 0, 1 << 30, {"exceeds the supported maximum"}},
      {"huge layers", 2, 1 << 30, {"n_layers"}},
  };
  for (const Llama2cBroken& c : cases) {
    SCOPED_TRACE(c.what);
    std::string bytes = ReadBytes(kStoriesPath);
    Put<int32_t>(bytes, 4 * c.field, c.value);
    absl::StatusOr<LoadedModel> model = LoadModel(WriteTemp("broken.bin", bytes));
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
    EXPECT_THAT(Message(model.status()), HasSubstr("broken.bin"));
    for (const std::string& part : c.message_parts) {
      EXPECT_THAT(Message(model.status()), HasSubstr(part));
    }
  }
}

TEST(Llama2cLoaderTest, WrongFileSizesAreRejected) {
  const std::string full = ReadBytes(kStoriesPath);
  absl::StatusOr<LoadedModel> model =
      LoadModel(WriteTemp("short.bin", full.substr(0, full.size() - 4)));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      Message(model.status()),
      AllOf(HasSubstr("1056536 bytes"), HasSubstr("implies 1056540"), HasSubstr("truncated by 4")));

  model = LoadModel(WriteTemp("long.bin", full + std::string(8, '\0')));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(model.status()), HasSubstr("8 unexpected trailing bytes"));

  // A header that claims a far bigger model than the file holds: no allocation is tried.
  std::string big = full;
  Put<int32_t>(big, 0, 4096);
  Put<int32_t>(big, 12, 32);
  Put<int32_t>(big, 16, 32);
  model = LoadModel(WriteTemp("big.bin", big));
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(Message(model.status()), HasSubstr("truncated"));

  for (size_t n : {0, 3, 27}) {
    model = LoadModel(WriteTemp("tiny.bin", full.substr(0, n)));
    ASSERT_FALSE(model.ok()) << n;
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(model.status()), HasSubstr("shorter than the 28-byte header"));
  }
}

TEST(LoadModelTest, MissingFileIsNotFoundWithPath) {
  const std::string path = ::testing::TempDir() + "/no_such_model.bin";
  absl::StatusOr<LoadedModel> model = LoadModel(path);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(model.status()), HasSubstr(path));
}

// ------------------------------------------------------------------ GGUF: a tiny llama

// dim 32, hidden 48, 2 layers, 4 heads of 8, 2 KV heads, vocab 20.
constexpr int kDim = 32, kHidden = 48, kLayers = 2, kHeads = 4, kKvHeads = 2, kHeadDim = 8,
              kVocab = 20;

// A value that identifies the tensor and the element, so the mapping can be checked.
float TinyValue(const std::string& name, size_t i) {
  return static_cast<float>(std::hash<std::string>()(name) % 1000) +
         0.5f * static_cast<float>(i % 997);
}

std::vector<float> TinyTensor(const std::string& name, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = TinyValue(name, i);
  return v;
}

GgufBuilder TinyLlama(bool with_output = false) {
  GgufBuilder b;
  b.Str("general.architecture", "llama")
      .Str("general.name", "tiny")
      .U32("llama.context_length", 64)
      .U32("llama.embedding_length", kDim)
      .U32("llama.block_count", kLayers)
      .U32("llama.feed_forward_length", kHidden)
      .U32("llama.attention.head_count", kHeads)
      .U32("llama.attention.head_count_kv", kKvHeads)
      .F32("llama.attention.layer_norm_rms_epsilon", 1e-6f)
      .F32("llama.rope.freq_base", 500000.0f)
      .U32("llama.vocab_size", kVocab);
  auto add = [&](const std::string& name, std::vector<int64_t> dims) {
    size_t n = 1;
    for (int64_t d : dims) n *= d;
    b.TensorF32(name, dims, TinyTensor(name, n));
  };
  add("token_embd.weight", {kDim, kVocab});
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {kDim});
    add(p + "attn_q.weight", {kDim, kHeads * kHeadDim});
    add(p + "attn_k.weight", {kDim, kKvHeads * kHeadDim});
    add(p + "attn_v.weight", {kDim, kKvHeads * kHeadDim});
    add(p + "attn_output.weight", {kHeads * kHeadDim, kDim});
    add(p + "ffn_norm.weight", {kDim});
    add(p + "ffn_gate.weight", {kDim, kHidden});
    add(p + "ffn_down.weight", {kHidden, kDim});
    add(p + "ffn_up.weight", {kDim, kHidden});
  }
  add("output_norm.weight", {kDim});
  if (with_output) add("output.weight", {kDim, kVocab});
  return b;
}

absl::StatusOr<LoadedModel> LoadBytes(const std::string& bytes) {
  return LoadModel(WriteTemp("model.gguf", bytes));
}

TEST(GgufLoaderTest, TinyLlamaConfigAndTensorMapping) {
  absl::StatusOr<LoadedModel> model = LoadBytes(TinyLlama().Build());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->format, ModelFormat::kGguf);
  ASSERT_NE(model->gguf, nullptr);
  const ModelConfig& c = model->config;
  EXPECT_EQ(c.name, "tiny");
  EXPECT_EQ(c.dim, kDim);
  EXPECT_EQ(c.hidden_dim, kHidden);
  EXPECT_EQ(c.n_layers, kLayers);
  EXPECT_EQ(c.n_heads, kHeads);
  EXPECT_EQ(c.n_kv_heads, kKvHeads);
  EXPECT_EQ(c.head_dim, kHeadDim);
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.max_seq_len, 64);
  EXPECT_EQ(c.rms_eps, 1e-6f);
  EXPECT_EQ(c.rope_theta, 500000.0f);
  EXPECT_TRUE(c.tied_classifier);

  const ModelWeights& w = model->weights;
  EXPECT_EQ(w.token_embedding, TinyTensor("token_embd.weight", kDim * kVocab));
  EXPECT_EQ(w.final_norm, TinyTensor("output_norm.weight", kDim));
  EXPECT_TRUE(w.classifier.empty());
  ASSERT_EQ(w.layers.size(), static_cast<size_t>(kLayers));
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    const LayerWeights& l = w.layers[i];
    EXPECT_EQ(l.attn_norm, TinyTensor(p + "attn_norm.weight", kDim));
    EXPECT_EQ(l.wq, TinyTensor(p + "attn_q.weight", kDim * kHeads * kHeadDim));
    EXPECT_EQ(l.wk, TinyTensor(p + "attn_k.weight", kDim * kKvHeads * kHeadDim));
    EXPECT_EQ(l.wv, TinyTensor(p + "attn_v.weight", kDim * kKvHeads * kHeadDim));
    EXPECT_EQ(l.wo, TinyTensor(p + "attn_output.weight", kDim * kHeads * kHeadDim));
    EXPECT_EQ(l.ffn_norm, TinyTensor(p + "ffn_norm.weight", kDim));
    EXPECT_EQ(l.w_gate, TinyTensor(p + "ffn_gate.weight", kDim * kHidden));
    EXPECT_EQ(l.w_down, TinyTensor(p + "ffn_down.weight", kDim * kHidden));
    EXPECT_EQ(l.w_up, TinyTensor(p + "ffn_up.weight", kDim * kHidden));
  }
}

TEST(GgufLoaderTest, OutputTensorMeansSeparateClassifier) {
  absl::StatusOr<LoadedModel> model = LoadBytes(TinyLlama(/*with_output=*/true).Build());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(model->config.tied_classifier);
  EXPECT_EQ(model->weights.classifier, TinyTensor("output.weight", kDim * kVocab));
}

TEST(GgufLoaderTest, OptionalMetadataDefaults) {
  GgufBuilder b = TinyLlama();
  b.Remove("llama.attention.head_count_kv")
      .Remove("llama.rope.freq_base")
      .Remove("llama.vocab_size");
  b.Remove("general.name");
  std::vector<std::string> tokens(kVocab, "t");
  b.StrArray("tokenizer.ggml.tokens", tokens);
  // Without head_count_kv every head has its own KV head: K/V are [dim, dim].
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    b.TensorF32(p + "attn_k.weight", {kDim, kDim}, TinyTensor("k", kDim * kDim));
    b.TensorF32(p + "attn_v.weight", {kDim, kDim}, TinyTensor("v", kDim * kDim));
  }
  absl::StatusOr<LoadedModel> model = LoadBytes(b.Build());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->config.n_kv_heads, kHeads);
  EXPECT_EQ(model->config.rope_theta, 10000.0f);
  EXPECT_EQ(model->config.vocab_size, kVocab);
  EXPECT_THAT(model->config.name, ::testing::EndsWith("model"));  // the file's stem
}

TEST(GgufLoaderTest, KeyLengthSetsHeadDim) {
  // 4 heads of 16 = 64 query features on a 32-wide model (as in some Llama variants).
  GgufBuilder b = TinyLlama();
  b.U32("llama.attention.key_length", 16).U32("llama.rope.dimension_count", 16);
  for (int i = 0; i < kLayers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    b.TensorF32(p + "attn_q.weight", {kDim, 64}, TinyTensor("q", kDim * 64));
    b.TensorF32(p + "attn_k.weight", {kDim, 32}, TinyTensor("k", kDim * 32));
    b.TensorF32(p + "attn_v.weight", {kDim, 32}, TinyTensor("v", kDim * 32));
    b.TensorF32(p + "attn_output.weight", {64, kDim}, TinyTensor("o", kDim * 64));
  }
  absl::StatusOr<LoadedModel> model = LoadBytes(b.Build());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->config.head_dim, 16);
  EXPECT_EQ(model->config.q_dim(), 64);
  EXPECT_EQ(model->weights.layers[1].wo.values.size(), 64u * kDim);
}

struct GgufModelBroken {
  const char* what;
  std::function<void(GgufBuilder&)> mutate;
  absl::StatusCode code;
  std::vector<std::string> message_parts;
};

TEST(GgufLoaderTest, BrokenModelsAreRejected) {
  using Code = absl::StatusCode;
  const GgufModelBroken cases[] = {
      {"non-llama architecture",
       [](GgufBuilder& b) { b.Str("general.architecture", "qwen2"); },
       Code::kUnimplemented,
       {"architecture 'qwen2'", "only 'llama'"}},
      {"no architecture",
       [](GgufBuilder& b) { b.Remove("general.architecture"); },
       Code::kInvalidArgument,
       {"missing required metadata key 'general.architecture'"}},
      {"no context length",
       [](GgufBuilder& b) { b.Remove("llama.context_length"); },
       Code::kInvalidArgument,
       {"missing required metadata key 'llama.context_length'"}},
      {"no embedding length",
       [](GgufBuilder& b) { b.Remove("llama.embedding_length"); },
       Code::kInvalidArgument,
       {"'llama.embedding_length'"}},
      {"no block count",
       [](GgufBuilder& b) { b.Remove("llama.block_count"); },
       Code::kInvalidArgument,
       {"'llama.block_count'"}},
      {"no ffn length",
       [](GgufBuilder& b) { b.Remove("llama.feed_forward_length"); },
       Code::kInvalidArgument,
       {"'llama.feed_forward_length'"}},
      {"no head count",
       [](GgufBuilder& b) { b.Remove("llama.attention.head_count"); },
       Code::kInvalidArgument,
       {"'llama.attention.head_count'"}},
      {"no rms eps",
       [](GgufBuilder& b) { b.Remove("llama.attention.layer_norm_rms_epsilon"); },
       Code::kInvalidArgument,
       {"'llama.attention.layer_norm_rms_epsilon'"}},
      {"no vocab",
       [](GgufBuilder& b) { b.Remove("llama.vocab_size"); },
       Code::kInvalidArgument,
       {"llama.vocab_size", "tokenizer.ggml.tokens"}},
      {"size of the wrong type",
       [](GgufBuilder& b) { b.Str("llama.block_count", "two"); },
       Code::kInvalidArgument,
       {"'llama.block_count'", "string"}},
      {"zero layers",
       [](GgufBuilder& b) { b.U32("llama.block_count", 0); },
       Code::kInvalidArgument,
       {"'llama.block_count' = 0"}},
      {"kv heads do not divide heads",
       [](GgufBuilder& b) { b.U32("llama.attention.head_count_kv", 3); },
       Code::kInvalidArgument,
       {"n_kv_heads (3)"}},
      {"partial rotary",
       [](GgufBuilder& b) { b.U32("llama.rope.dimension_count", 4); },
       Code::kUnimplemented,
       {"llama.rope.dimension_count = 4"}},
      {"rope scaling",
       [](GgufBuilder& b) { b.Str("llama.rope.scaling.type", "yarn"); },
       Code::kUnimplemented,
       {"RoPE scaling 'yarn'"}},
      {"missing tensor",
       [](GgufBuilder& b) { b.RemoveTensor("blk.1.ffn_up.weight"); },
       Code::kInvalidArgument,
       {"missing tensor 'blk.1.ffn_up.weight'"}},
      {"missing embedding",
       [](GgufBuilder& b) { b.RemoveTensor("token_embd.weight"); },
       Code::kInvalidArgument,
       {"missing tensor 'token_embd.weight'"}},
      {"wrong shape",
       [](GgufBuilder& b) {
         b.TensorF32("blk.0.attn_k.weight", {kDim, 8}, std::vector<float>(kDim * 8));
       },
       Code::kInvalidArgument,
       {"'blk.0.attn_k.weight'", "[32, 8]", "expected [32, 16]"}},
      {"transposed",
       [](GgufBuilder& b) {
         b.TensorF32("blk.1.ffn_down.weight", {kDim, kHidden}, std::vector<float>(kDim * kHidden));
       },
       Code::kInvalidArgument,
       {"'blk.1.ffn_down.weight'", "[32, 48]", "expected [48, 32]"}},
      {"wrong rank",
       [](GgufBuilder& b) {
         b.TensorF32("output_norm.weight", {kDim, 1}, std::vector<float>(kDim));
       },
       Code::kInvalidArgument,
       {"'output_norm.weight'", "expected [32]"}},
      {"vocab disagrees with embedding",
       [](GgufBuilder& b) { b.U32("llama.vocab_size", 21); },
       Code::kInvalidArgument,
       {"'token_embd.weight'", "expected [32, 21]"}},
      {"unsupported weight type",
       [](GgufBuilder& b) {
         b.Tensor("blk.0.attn_q.weight", {kDim, kDim}, /*Q5_0=*/6, std::string(32 * 22, '\0'));
       },
       Code::kUnimplemented,
       {"'blk.0.attn_q.weight'", "Q5_0"}},
  };
  for (const GgufModelBroken& c : cases) {
    SCOPED_TRACE(c.what);
    GgufBuilder b = TinyLlama();
    c.mutate(b);
    absl::StatusOr<LoadedModel> model = LoadBytes(b.Build());
    ASSERT_FALSE(model.ok()) << "accepted";
    EXPECT_EQ(model.status().code(), c.code) << model.status();
    EXPECT_THAT(Message(model.status()), HasSubstr("model.gguf"));
    for (const std::string& part : c.message_parts) {
      EXPECT_THAT(Message(model.status()), HasSubstr(part));
    }
  }
}

TEST(GgufLoaderTest, CorruptGgufIsReportedNotMistakenForLlama2c) {
  std::string bytes = TinyLlama().Build();
  bytes.resize(40);
  absl::StatusOr<LoadedModel> model = LoadBytes(bytes);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(model.status()), AllOf(HasSubstr("GGUF file"), HasSubstr("past the end")));
}

// ------------------------------------------------------------------ GGUF: SmolLM2

class SmolLM2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<LoadedModel> loaded = LoadModel(kSmolPath);
    if (!loaded.ok()) {
      load_error_ = new std::string(loaded.status().ToString());
      return;
    }
    model_ = new LoadedModel(*std::move(loaded));
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(model_, nullptr) << "cannot load " << kSmolPath << ": "
                               << (load_error_ ? *load_error_ : "")
                               << " (the set-up script provides it)";
  }
  static LoadedModel* model_;
  static std::string* load_error_;
};
LoadedModel* SmolLM2Test::model_ = nullptr;
std::string* SmolLM2Test::load_error_ = nullptr;

TEST_F(SmolLM2Test, ConfigMatchesFileMetadata) {
  EXPECT_EQ(model_->format, ModelFormat::kGguf);
  const ModelConfig& c = model_->config;
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.hidden_dim, 1536);
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_seq_len, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_EQ(c.rms_eps, 1e-5f);
  EXPECT_TRUE(c.tied_classifier);
}

TEST_F(SmolLM2Test, KeepsTheGgufFileForTheTokenizer) {
  ASSERT_NE(model_->gguf, nullptr);
  EXPECT_EQ(*model_->gguf->GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*model_->gguf->ArrayLength("tokenizer.ggml.tokens"), 49152u);
  absl::StatusOr<std::vector<std::string>> tokens =
      model_->gguf->GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ((*tokens)[1], "<|im_start|>");
  EXPECT_EQ(*model_->gguf->GetInt("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_THAT(*model_->gguf->GetString("tokenizer.chat_template"), HasSubstr("<|im_start|>"));
}

TEST_F(SmolLM2Test, WeightShapesAndNorms) {
  const ModelWeights& w = model_->weights;
  EXPECT_EQ(w.token_embedding.values.size(), 49152u * 576);
  EXPECT_TRUE(w.classifier.empty());
  ASSERT_EQ(w.layers.size(), 30u);
  for (const LayerWeights& l : w.layers) {
    EXPECT_EQ(l.wq.values.size(), 576u * 576);
    EXPECT_EQ(l.wk.values.size(), 192u * 576);
    EXPECT_EQ(l.wv.values.size(), 192u * 576);
    EXPECT_EQ(l.wo.values.size(), 576u * 576);
    EXPECT_EQ(l.w_gate.values.size(), 1536u * 576);
    EXPECT_EQ(l.w_down.values.size(), 576u * 1536);
    EXPECT_EQ(l.w_up.values.size(), 1536u * 576);
    EXPECT_TRUE(AllFinite(l.attn_norm));
    EXPECT_TRUE(AllFinite(l.ffn_norm));
  }
  EXPECT_TRUE(AllFinite(w.final_norm));
  EXPECT_TRUE(AllFinite(w.token_embedding.values));
}

TEST_F(SmolLM2Test, DequantizedWeightsMatchGgufPy) {
  const nlohmann::json& s = Samples()["smollm2"];
  const ModelWeights& w = model_->weights;
  EXPECT_EQ(s["token_embd.weight"]["type"], "Q8_0");
  EXPECT_EQ(s["blk.0.attn_q.weight"]["type"], "Q4_1");
  ExpectMatchesSample(w.token_embedding.values, s["token_embd.weight"], "token_embd (Q8_0)");
  ExpectMatchesSample(w.layers[0].wq.values, s["blk.0.attn_q.weight"], "blk.0.attn_q (Q4_1)");
  ExpectMatchesSample(w.layers[0].wk.values, s["blk.0.attn_k.weight"], "blk.0.attn_k (Q4_1)");
  ExpectMatchesSample(w.layers[29].w_down.values, s["blk.29.ffn_down.weight"], "blk.29.ffn_down (Q4_1)");
  ExpectMatchesSample(w.layers[7].attn_norm, s["blk.7.attn_norm.weight"], "blk.7.attn_norm (F32)");
  ExpectMatchesSample(w.final_norm, s["output_norm.weight"], "output_norm (F32)");
}

// --weights auto keeps the file's blocks: each matrix's bytes are the file's
// own, and they dequantize to exactly what the float32 load holds.
TEST_F(SmolLM2Test, AutoModeKeepsTheFilesBlocksByteForByte) {
  absl::StatusOr<LoadedModel> kept = LoadModel(kSmolPath, WeightMode::kAuto);
  ASSERT_TRUE(kept.ok()) << kept.status();
  const ModelWeights& w = kept->weights;
  EXPECT_EQ(w.token_embedding.type, WeightType::kQ8_0);
  const struct {
    const WeightMatrix* matrix;
    const WeightMatrix* as_float;
    const char* tensor;
    int64_t rows, cols;
  } checks[] = {
      {&w.token_embedding, &model_->weights.token_embedding, "token_embd.weight", 49152, 576},
      {&w.layers[0].wq, &model_->weights.layers[0].wq, "blk.0.attn_q.weight", 576, 576},
      {&w.layers[29].w_down, &model_->weights.layers[29].w_down, "blk.29.ffn_down.weight", 576, 1536},
  };
  for (const auto& c : checks) {
    const gguf::TensorInfo* info = kept->gguf->FindTensor(c.tensor);
    ASSERT_NE(info, nullptr);
    absl::StatusOr<const uint8_t*> raw = kept->gguf->TensorData(*info);
    ASSERT_TRUE(raw.ok());
    EXPECT_TRUE(c.matrix->values.empty());
    ASSERT_EQ(c.matrix->bytes.size(), info->bytes) << c.tensor;
    EXPECT_EQ(std::memcmp(c.matrix->bytes.data(), *raw, info->bytes), 0) << c.tensor;
    EXPECT_EQ(c.matrix->ToFloat(c.rows, c.cols), c.as_float->values) << c.tensor;
  }
  for (const LayerWeights& l : w.layers) {
    for (const WeightMatrix* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      EXPECT_EQ(m->type, WeightType::kQ4_1);
    }
  }
  absl::StatusOr<LoadedModel> q8 = LoadModel(kSmolPath, WeightMode::kQ8_0);
  ASSERT_TRUE(q8.ok()) << q8.status();
  EXPECT_EQ(q8->weights.layers[3].w_up.type, WeightType::kQ8_0);
  EXPECT_EQ(q8->weights.layers[3].w_up.bytes.size(), 1536u * RowBytes(WeightType::kQ8_0, 576));
}

}  // namespace
}  // namespace medusa
