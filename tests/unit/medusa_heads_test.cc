// Medusa heads: loading the reference layout (files written by PyTorch + safetensors in
// tests/reference/make_safetensors_fixtures.py), the head math against torch's logits,
// layout and shape errors, and the writer's round trip.

#include "engine/medusa/heads_file.h"
#include "engine/train/draft_vocab.h"
#include "tests/support/random_heads.h"
#include "tests/support/reference_heads.h"

#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/model/dequant.h"
#include "engine/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/temp_dir.h"
#include "tests/unit/model_test_util.h"

namespace medusa {
namespace {

using ::medusa::testing_util::ReadBytes;
using ::medusa::testing_util::SourcePath;
using ::medusa::testing_util::WriteTemp;
using ::testing::AllOf;
using ::testing::HasSubstr;

const nlohmann::json& Expected() {
  static const nlohmann::json* expected = new nlohmann::json(
      nlohmann::json::parse(ReadBytes(SourcePath("tests/fixtures/medusa_heads.json"))));
  return *expected;
}

ModelConfig FixtureConfig() {
  ModelConfig config;
  config.dim = Expected()["dim"].get<int>();
  config.vocab_size = Expected()["vocab"].get<int>();
  return config;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

MedusaHeadsWeights LoadOrDie(const std::string& path, const ModelConfig& config) {
  absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(path, config);
  EXPECT_TRUE(heads.ok()) << heads.status();
  return heads.ok() ? *std::move(heads) : MedusaHeadsWeights{};
}

void ExpectLogitsMatchTorch(const MedusaHeadsWeights& heads, const std::vector<float>& classifier,
                            const nlohmann::json& want_logits) {
  const auto hidden = Expected()["hidden"].get<std::vector<float>>();
  std::vector<float> out(static_cast<size_t>(heads.num_heads) * heads.vocab);
  ASSERT_TRUE(ComputeHeadLogits(heads, classifier, hidden, absl::MakeSpan(out)).ok());
  ASSERT_EQ(want_logits.size(), static_cast<size_t>(heads.num_heads));
  for (int k = 0; k < heads.num_heads; ++k) {
    const auto want = want_logits[k].get<std::vector<double>>();
    ASSERT_EQ(want.size(), static_cast<size_t>(heads.vocab));
    for (int v = 0; v < heads.vocab; ++v) {
      EXPECT_NEAR(out[k * heads.vocab + v], want[v], 1e-4 * (1.0 + std::fabs(want[v])))
          << "head " << k << " token " << v;
    }
  }
}

// ------------------------------------------------------------------ reference files

TEST(MedusaHeadsTest, LoadsReferenceLayoutWithProjection) {
  MedusaHeadsWeights heads =
      LoadOrDie(SourcePath("tests/fixtures/medusa_heads_proj.safetensors"), FixtureConfig());
  EXPECT_EQ(heads.num_heads, 3);
  EXPECT_EQ(heads.num_layers, 2);
  EXPECT_EQ(heads.dim, 16);
  EXPECT_EQ(heads.vocab, 40);
  EXPECT_TRUE(heads.has_projection());
  EXPECT_TRUE(heads.Validate().ok());
  ExpectLogitsMatchTorch(heads, {}, Expected()["proj"]["logits"]);
}

TEST(MedusaHeadsTest, LoadsF16HeadsWithoutProjectionUsingBaseClassifier) {
  MedusaHeadsWeights heads =
      LoadOrDie(SourcePath("tests/fixtures/medusa_heads_noproj.safetensors"), FixtureConfig());
  EXPECT_EQ(heads.num_heads, 3);
  EXPECT_EQ(heads.num_layers, 2);
  EXPECT_FALSE(heads.has_projection());
  const auto classifier = Expected()["base_classifier"].get<std::vector<float>>();
  ExpectLogitsMatchTorch(heads, classifier, Expected()["noproj"]["logits"]);
}

TEST(MedusaHeadsTest, ComputesOnlyTheHeadsAsked) {
  MedusaHeadsWeights heads =
      LoadOrDie(SourcePath("tests/fixtures/medusa_heads_proj.safetensors"), FixtureConfig());
  const auto hidden = Expected()["hidden"].get<std::vector<float>>();
  std::vector<float> all(3 * 40), two(2 * 40);
  std::vector<float> scratch;
  ASSERT_TRUE(ComputeHeadLogits(heads, {}, hidden, absl::MakeSpan(all), &scratch).ok());
  ASSERT_TRUE(ComputeHeadLogits(heads, {}, hidden, absl::MakeSpan(two), &scratch).ok());
  EXPECT_EQ(two, std::vector<float>(all.begin(), all.begin() + 80));
  EXPECT_GE(scratch.size(), 4u * 16u);
}

TEST(MedusaHeadsTest, ConfigMismatchNamesTheTensor) {
  ModelConfig wrong_dim = FixtureConfig();
  wrong_dim.dim = 32;
  absl::StatusOr<MedusaHeadsWeights> a =
      LoadMedusaHeads(SourcePath("tests/fixtures/medusa_heads_proj.safetensors"), wrong_dim);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(a.status()),
              AllOf(HasSubstr("'0.0.linear.weight'"), HasSubstr("[16, 16]"),
                    HasSubstr("expected [32, 32]"), HasSubstr("medusa_heads_proj.safetensors")));

  ModelConfig wrong_vocab = FixtureConfig();
  wrong_vocab.vocab_size = 41;
  absl::StatusOr<MedusaHeadsWeights> b =
      LoadMedusaHeads(SourcePath("tests/fixtures/medusa_heads_proj.safetensors"), wrong_vocab);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(b.status()), AllOf(HasSubstr("'0.2.weight'"), HasSubstr("[40, 16]"),
                                         HasSubstr("expected [41, 16]"), HasSubstr("vocab_size")));
}

TEST(MedusaHeadsTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadMedusaHeads("/nonexistent/heads.safetensors", FixtureConfig()).status().code(),
            absl::StatusCode::kNotFound);
}

// ------------------------------------------------------------------ layout errors

// Writes a file holding the named tensors with the shapes the fixture config wants
// (projection-like names get [vocab, dim]).
std::string WriteLayout(const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
                        const nlohmann::json& metadata = nullptr) {
  std::vector<std::vector<float>> storage;
  std::vector<safetensors::TensorToWrite> list;
  storage.reserve(tensors.size());
  for (const auto& [name, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    storage.emplace_back(n, 0.5f);
    list.push_back({name, shape, storage.back()});
  }
  const std::string path = WriteTemp("layout.safetensors", "");
  EXPECT_TRUE(safetensors::WriteFile(path, list, metadata).ok());
  return path;
}

using Layout = std::vector<std::pair<std::string, std::vector<int64_t>>>;
const std::vector<int64_t> kW = {16, 16}, kB = {16}, kP = {40, 16};

Layout Block(int h, int l) {
  return {{absl::StrCat(h, ".", l, ".linear.weight"), kW},
          {absl::StrCat(h, ".", l, ".linear.bias"), kB}};
}
Layout Join(std::initializer_list<Layout> parts) {
  Layout out;
  for (const Layout& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

absl::Status LoadLayout(const Layout& layout) {
  return LoadMedusaHeads(WriteLayout(layout), FixtureConfig()).status();
}

TEST(MedusaHeadsLayoutTest, ValidLayoutsLoad) {
  EXPECT_TRUE(LoadLayout(Join({Block(0, 0), Block(1, 0)})).ok());
  EXPECT_TRUE(LoadLayout(Join({Block(0, 0), {{"0.1.weight", kP}}, Block(1, 0),
                               {{"1.1.weight", kP}}}))
                  .ok());
  // Heads with no blocks, only a projection.
  absl::StatusOr<MedusaHeadsWeights> projection_only =
      LoadMedusaHeads(WriteLayout({{"0.0.weight", kP}, {"1.0.weight", kP}}), FixtureConfig());
  ASSERT_TRUE(projection_only.ok()) << projection_only.status();
  EXPECT_EQ(projection_only->num_layers, 0);
  EXPECT_EQ(projection_only->num_heads, 2);
}

TEST(MedusaHeadsLayoutTest, CombinedCheckpointPrefixIsRead) {
  absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(
      WriteLayout({{"model.norm.weight", kB},
                   {"medusa_head.0.0.linear.weight", kW},
                   {"medusa_head.0.0.linear.bias", kB},
                   {"medusa_head.0.1.weight", kP}}),
      FixtureConfig());
  ASSERT_TRUE(heads.ok()) << heads.status();
  EXPECT_EQ(heads->num_heads, 1);
  EXPECT_EQ(heads->num_layers, 1);
  EXPECT_TRUE(heads->has_projection());
  EXPECT_EQ(heads->heads[0].projection.size(), 40u * 16u);
}

struct LayoutCase {
  const char* what;
  Layout layout;
  std::vector<std::string> message_parts;
};

TEST(MedusaHeadsLayoutTest, LayoutErrorsNameTheTensor) {
  const std::vector<LayoutCase> cases = {
      {"missing bias", Join({Block(0, 0), {{"0.1.linear.weight", kW}}}),
       {"missing tensor '0.1.linear.bias'"}},
      {"missing weight", Join({Block(0, 0), {{"0.1.linear.bias", kB}}}),
       {"missing tensor '0.1.linear.weight'"}},
      {"gap in head numbering", Join({Block(0, 0), Block(2, 0)}), {"no tensors for head 1"}},
      {"heads not starting at 0", Join({Block(1, 0)}), {"no tensors for head 0"}},
      {"gap in layer numbering", Join({Block(0, 0), Block(0, 2)}),
       {"head 0", "gap", "'0.1.linear.weight'"}},
      {"different block counts", Join({Block(0, 0), Block(0, 1), Block(1, 0)}),
       {"head 1 has 1 ResBlocks but head 0 has 2"}},
      {"mixed projection presence", Join({Block(0, 0), Block(1, 0), {{"1.1.weight", kP}}}),
       {"'1.1.weight'", "head 0 has none"}},
      {"projection at the wrong index", Join({Block(0, 0), Block(0, 1), {{"0.1.weight", kP}}}),
       {"'0.1.weight'", "'0.2.weight'"}},
      {"unknown name", Join({Block(0, 0), {{"lm_head.weight", kP}}}),
       {"'lm_head.weight'", "not in the Medusa heads layout"}},
      {"projection with a bias", Join({Block(0, 0), {{"0.1.weight", kP}, {"0.1.bias", kB}}}),
       {"'0.1.bias'"}},
      {"leading zero", Join({Block(0, 0), {{"00.0.linear.weight", kW}}}), {"'00.0.linear.weight'"}},
      {"wrong bias shape", {{"0.0.linear.weight", kW}, {"0.0.linear.bias", {15}}},
       {"'0.0.linear.bias'", "[15]", "expected [16]"}},
      {"wrong weight shape", {{"0.0.linear.weight", {16, 8}}, {"0.0.linear.bias", kB}},
       {"'0.0.linear.weight'", "[16, 8]"}},
      {"no head tensors", {{"model.norm.weight", kB}}, {"'model.norm.weight'"}},
      {"empty file", {}, {"no Medusa head tensors"}},
  };
  for (const LayoutCase& c : cases) {
    SCOPED_TRACE(c.what);
    absl::Status s = LoadLayout(c.layout);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    for (const std::string& part : c.message_parts) EXPECT_THAT(Message(s), HasSubstr(part));
  }
}

// ------------------------------------------------------------------ writer, random heads

TEST(MedusaHeadsSaveTest, RoundTripsF32Exactly) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 4, 2, /*with_projection=*/true, 5, 0.1f);
  const std::string path = WriteTemp("heads.safetensors", "");
  ASSERT_TRUE(SaveMedusaHeads(path, heads, {{"base_model", "fixture"}}).ok());
  MedusaHeadsWeights loaded = LoadOrDie(path, config);
  ASSERT_EQ(loaded.num_heads, 4);
  ASSERT_EQ(loaded.num_layers, 2);
  for (int h = 0; h < 4; ++h) {
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(loaded.heads[h].blocks[l].weight, heads.heads[h].blocks[l].weight);
      EXPECT_EQ(loaded.heads[h].blocks[l].bias, heads.heads[h].blocks[l].bias);
    }
    EXPECT_EQ(loaded.heads[h].projection, heads.heads[h].projection);
  }
  absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().value("base_model", ""), "fixture");
  EXPECT_EQ((*file)->metadata().value("medusa_num_heads", ""), "4");
  EXPECT_EQ((*file)->metadata().value("medusa_num_layers", ""), "2");
  // The reference's state-dict order.
  EXPECT_EQ((*file)->tensors()[0].name, "0.0.linear.weight");
  EXPECT_EQ((*file)->tensors()[1].name, "0.0.linear.bias");
  EXPECT_EQ((*file)->tensors()[4].name, "0.2.weight");
  EXPECT_EQ((*file)->tensors()[5].name, "1.0.linear.weight");
}

// Heads as FasterDecoding publishes them: medusa_lm_head.safetensors beside a config.json
// with their counts, which must agree with the file; a model's own config.json beside them
// (no medusa_ keys) says nothing of the heads.
TEST(MedusaHeadsSaveTest, PublishedConfigBesideTheHeadsMustAgree) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 3, 1, /*with_projection=*/false, 5, 0.1f);
  medusa::testing::TempDir dir;
  const std::string path = dir.file("medusa_lm_head.safetensors");
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr).ok());
  const std::string config_path = dir.file("config.json");
  auto write_config = [&](const std::string& text) { std::ofstream(config_path) << text; };
  write_config(R"({"medusa_num_heads": 3, "medusa_num_layers": 1, "base_model_name_or_path": "fixture"})");
  EXPECT_TRUE(LoadMedusaHeads(path, config).ok());
  write_config(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})");
  EXPECT_TRUE(LoadMedusaHeads(path, config).ok());
  write_config(R"({"medusa_num_heads": 5, "medusa_num_layers": 1})");
  absl::Status s = LoadMedusaHeads(path, config).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(Message(s), AllOf(HasSubstr("medusa_num_heads = 5"), HasSubstr("has 3")));
  write_config(R"({"medusa_num_heads": 3, "medusa_num_layers": 2})");
  s = LoadMedusaHeads(path, config).status();
  EXPECT_THAT(Message(s), HasSubstr("medusa_num_layers = 2"));
}

TEST(MedusaHeadsSaveTest, DraftVocabularyRoundTripsThroughTheMetadata) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 2, 1, /*with_projection=*/false, 5, 0.1f);
  heads.draft_vocab = {7, 0, config.vocab_size - 1, 3};
  const std::string path = WriteTemp("draft.safetensors", "");
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr).ok());
  EXPECT_EQ(LoadOrDie(path, config).draft_vocab, heads.draft_vocab);
  absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().value(kDraftVocabKey, ""), absl::StrCat("7 0 ", config.vocab_size - 1, " 3"));
  // Heads without one load with an empty draft vocabulary (every token).
  heads.draft_vocab.clear();
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr).ok());
  EXPECT_TRUE(LoadOrDie(path, config).draft_vocab.empty());
}

TEST(MedusaHeadsSaveTest, BadDraftVocabularyIsAClearError) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 1, 1, false, 5, 0.1f);
  const std::string path = WriteTemp("bad_draft.safetensors", "");
  for (const auto& [text, problem] :
       std::vector<std::pair<std::string, std::string>>{{"1 2 x", "'x' is not a token id"},
                                                        {"1 2 1", "listed twice"},
                                                        {absl::StrCat("1 ", config.vocab_size), "outside"},
                                                        {"-1", "outside"},
                                                        {"   ", "no token ids"}}) {
    SCOPED_TRACE(text);
    ASSERT_TRUE(SaveMedusaHeads(path, heads, {{kDraftVocabKey, text}}).ok());
    absl::StatusOr<MedusaHeadsWeights> loaded = LoadMedusaHeads(path, config);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(loaded.status()), AllOf(HasSubstr(kDraftVocabKey), HasSubstr(problem)));
  }
  heads.draft_vocab = {2, 2};
  EXPECT_THAT(Message(heads.Validate()), HasSubstr("twice"));
  heads.draft_vocab = {config.vocab_size};
  EXPECT_THAT(Message(heads.Validate()), HasSubstr("outside the vocabulary"));
}

// Hydra heads: the head type in the metadata, head k's first block [dim, (k + 2) * dim].
TEST(MedusaHeadsSaveTest, HydraHeadsRoundTripWithTheirTypeAndWiderFirstBlocks) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 3, 2, /*with_projection=*/false, 5, 0.1f, HeadKind::kHydra);
  const std::string path = WriteTemp("hydra.safetensors", "");
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr).ok());
  MedusaHeadsWeights loaded = LoadOrDie(path, config);
  EXPECT_EQ(loaded.kind, HeadKind::kHydra);
  for (int h = 0; h < 3; ++h) {
    EXPECT_EQ(loaded.heads[h].blocks[0].weight.size(), static_cast<size_t>(config.dim) * (h + 2) * config.dim);
    for (int l = 0; l < 2; ++l) EXPECT_EQ(loaded.heads[h].blocks[l].weight, heads.heads[h].blocks[l].weight);
  }
  absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().value(kHeadTypeKey, ""), "hydra");
  EXPECT_EQ((*file)->FindTensor("2.0.linear.weight")->shape, (std::vector<int64_t>{config.dim, 4 * config.dim}));
  // Medusa heads' files say nothing of a type, as the reference's.
  ASSERT_TRUE(SaveMedusaHeads(path, RandomMedusaHeads(config, 1, 1, false, 5, 0.1f), nullptr).ok());
  file = safetensors::File::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_FALSE((*file)->metadata().contains(kHeadTypeKey));
  EXPECT_EQ(LoadOrDie(path, config).kind, HeadKind::kMedusa);
}

TEST(MedusaHeadsSaveTest, BadHeadTypeIsAClearError) {
  const Layout medusa_shaped = Join({Block(0, 0), Block(1, 0)});
  auto expect_invalid = [&](const std::string& type, const std::vector<std::string>& parts) {
    absl::Status s = LoadMedusaHeads(WriteLayout(medusa_shaped, {{kHeadTypeKey, type}}), FixtureConfig()).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    for (const std::string& part : parts) EXPECT_THAT(Message(s), HasSubstr(part));
  };
  expect_invalid("eagle", {kHeadTypeKey, "\"eagle\"", "\"hydra\""});
  // Medusa-shaped blocks under a Hydra type: refused on the shape, naming what it should be.
  expect_invalid("hydra", {"0.0.linear.weight", "Hydra head 0's first block reads h and 1 token embeddings"});
  EXPECT_TRUE(LoadMedusaHeads(WriteLayout(medusa_shaped, {{kHeadTypeKey, "medusa"}}), FixtureConfig()).ok());
  // The saver writes the weights' own type, whatever the metadata it is given says.
  const std::string path = WriteTemp("typed.safetensors", "");
  ASSERT_TRUE(
      SaveMedusaHeads(path, RandomMedusaHeads(FixtureConfig(), 1, 1, false, 5, 0.1f), {{kHeadTypeKey, "hydra"}}).ok());
  EXPECT_EQ(LoadOrDie(path, FixtureConfig()).kind, HeadKind::kMedusa);
}

TEST(ChooseDraftVocabTest, SmallestMostFrequentSetThatCovers) {
  // Counts by id: 5 is the most frequent, then 1, then 3 and 0 tie (smaller id first).
  const std::vector<int64_t> counts = {10, 30, 0, 10, 0, 50};
  EXPECT_EQ(ChooseDraftVocab(counts, 0.5, 1), (std::vector<int32_t>{5}));
  EXPECT_EQ(ChooseDraftVocab(counts, 0.8, 1), (std::vector<int32_t>{5, 1}));
  EXPECT_EQ(ChooseDraftVocab(counts, 0.81, 1), (std::vector<int32_t>{5, 1, 0}));
  EXPECT_EQ(ChooseDraftVocab(counts, 1.0, 1), (std::vector<int32_t>{5, 1, 0, 3}));
  // The floor adds the next tokens, unseen ones by id; never past the vocabulary.
  EXPECT_EQ(ChooseDraftVocab(counts, 0.5, 5), (std::vector<int32_t>{5, 1, 0, 3, 2}));
  EXPECT_EQ(ChooseDraftVocab(counts, 1.0, 100).size(), counts.size());
}

TEST(MedusaHeadsSaveTest, RoundTripsF16WithHalfRounding) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights heads = RandomMedusaHeads(config, 2, 1, /*with_projection=*/false, 9, 0.3f);
  const std::string path = WriteTemp("heads16.safetensors", "");
  ASSERT_TRUE(SaveMedusaHeads(path, heads, nullptr, safetensors::DType::kF16).ok());
  absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->FindTensor("1.0.linear.weight")->dtype, safetensors::DType::kF16);
  EXPECT_EQ((*file)->FindTensor("0.1.weight"), nullptr);
  MedusaHeadsWeights loaded = LoadOrDie(path, config);
  EXPECT_FALSE(loaded.has_projection());
  const std::vector<float>& original = heads.heads[1].blocks[0].weight;
  const std::vector<float>& back = loaded.heads[1].blocks[0].weight;
  ASSERT_EQ(back.size(), original.size());
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i], gguf::HalfToFloat(safetensors::FloatToHalf(original[i])));
    EXPECT_NEAR(back[i], original[i], 1e-3 * std::fabs(original[i]) + 1e-7);
  }
}

TEST(MedusaHeadsSaveTest, RejectsInconsistentWeights) {
  MedusaHeadsWeights heads = RandomMedusaHeads(FixtureConfig(), 2, 1, true, 1, 0.1f);
  heads.heads[1].projection.clear();
  absl::Status s = SaveMedusaHeads(WriteTemp("bad.safetensors", ""), heads, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("head 1 projection"));
}

TEST(MedusaHeadsRandomTest, SeededAndShaped) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights a = RandomMedusaHeads(config, 3, 2, true, 42, 0.5f);
  MedusaHeadsWeights b = RandomMedusaHeads(config, 3, 2, true, 42, 0.5f);
  MedusaHeadsWeights c = RandomMedusaHeads(config, 3, 2, true, 43, 0.5f);
  EXPECT_TRUE(a.Validate().ok());
  EXPECT_EQ(a.heads[2].blocks[1].weight, b.heads[2].blocks[1].weight);
  EXPECT_NE(a.heads[2].blocks[1].weight, c.heads[2].blocks[1].weight);
  EXPECT_EQ(a.heads[0].projection.size(), 40u * 16u);
  double sum_sq = 0;
  for (float x : a.heads[0].projection) sum_sq += x * x;
  EXPECT_NEAR(std::sqrt(sum_sq / a.heads[0].projection.size()), 0.5, 0.05);
  MedusaHeadsWeights no_proj = RandomMedusaHeads(config, 1, 0, false, 1, 0.5f);
  EXPECT_FALSE(no_proj.has_projection());
  EXPECT_TRUE(no_proj.Validate().ok());
}

// ------------------------------------------------------------------ head math by hand

TEST(MedusaHeadsMathTest, HandComputedSingleHead) {
  // dim 2, vocab 3, one block: W = [[1, 0], [0, -1]], b = [0, 1], x = [2, 1]:
  // W x + b = [2, 0]; SiLU = [2 * sigmoid(2), 0]; h = [2 + 2 sigmoid(2), 1].
  MedusaHeadsWeights w;
  w.num_heads = 1;
  w.num_layers = 1;
  w.dim = 2;
  w.vocab = 3;
  w.heads.resize(1);
  w.heads[0].blocks = {{{1, 0, 0, -1}, {0, 1}}};
  w.heads[0].projection = {1, 0, 0, 1, 1, -1};
  std::vector<float> out(3);
  ASSERT_TRUE(ComputeHeadLogits(w, {}, std::vector<float>{2, 1}, absl::MakeSpan(out)).ok());
  const double h0 = 2.0 + 2.0 / (1.0 + std::exp(-2.0));  // 3.7615941559557649
  EXPECT_NEAR(out[0], h0, 1e-6);
  EXPECT_NEAR(out[1], 1.0, 1e-6);
  EXPECT_NEAR(out[2], h0 - 1.0, 1e-6);
  EXPECT_NEAR(h0, 3.7615941559557649, 1e-12);
}

TEST(MedusaHeadsMathTest, SizeErrors) {
  ModelConfig config = FixtureConfig();
  MedusaHeadsWeights with = RandomMedusaHeads(config, 2, 1, true, 1, 0.1f);
  MedusaHeadsWeights without = RandomMedusaHeads(config, 2, 1, false, 1, 0.1f);
  std::vector<float> hidden(16), out(2 * 40), classifier(40 * 16);
  EXPECT_TRUE(ComputeHeadLogits(with, {}, hidden, absl::MakeSpan(out)).ok());
  EXPECT_TRUE(ComputeHeadLogits(without, classifier, hidden, absl::MakeSpan(out)).ok());
  std::vector<float> short_hidden(15), odd_out(79), three_heads(3 * 40);
  EXPECT_THAT(Message(ComputeHeadLogits(with, {}, short_hidden, absl::MakeSpan(out))),
              HasSubstr("hidden state has 15 values"));
  EXPECT_FALSE(ComputeHeadLogits(with, {}, hidden, absl::MakeSpan(odd_out)).ok());
  EXPECT_FALSE(ComputeHeadLogits(with, {}, hidden, absl::MakeSpan(three_heads)).ok());
  EXPECT_THAT(Message(ComputeHeadLogits(without, {}, hidden, absl::MakeSpan(out))),
              HasSubstr("base classifier"));
}

}  // namespace
}  // namespace medusa
