// Hydra heads training (HeadsTrainer with HeadKind::kHydra): hand-written gradients against
// central differences of an independent double-precision loss, the teacher-forced forward
// against the float64 inference reference, learning what only the path tells, checkpoints
// that keep the head type, the distill set's next tokens, and input errors.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/medusa/heads_file.h"
#include "engine/train/heads_evaluation.h"
#include "engine/train/heads_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/gradient_check.h"
#include "tests/support/random_heads.h"
#include "tests/support/reference_heads.h"

namespace medusa {
namespace {

using testing::CheckTensor;
using testing::DoubleHeads;
using testing::DraftColumn;
using ::testing::HasSubstr;
using testing::LogSumExp;
using testing::RandomVector;
using testing::ReferenceLogits;
using testing::ToDouble;

ModelConfig Config(int dim, int vocab) {
  ModelConfig config;
  config.dim = dim;
  config.vocab_size = vocab;
  return config;
}

// Random rows as self-distillation makes them: hidden states, next tokens and targets, a
// text ending (-1 from some head on) with chance `ending` per row.
DistillSet RandomData(int rows, int dim, int heads, int vocab, uint64_t seed, double ending = 0.3) {
  DistillSet data;
  data.dim = dim;
  data.num_heads = heads;
  data.hidden = RandomVector(static_cast<size_t>(rows) * dim, seed, 1.0f);
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int> token(0, vocab - 1);
  std::bernoulli_distribution ends(ending);
  for (int r = 0; r < rows; ++r) {
    data.next.push_back(token(rng));
    const int end = ends(rng) ? static_cast<int>(rng() % heads) : heads;  // first head past the end
    for (int k = 0; k < heads; ++k) data.targets.push_back(k < end ? token(rng) : -1);
  }
  return data;
}

TrainerOptions HydraOptions(int heads, int layers, bool share) {
  TrainerOptions options;
  options.head_kind = HeadKind::kHydra;
  options.num_heads = heads;
  options.num_layers = layers;
  options.share_lm_head = share;
  options.threads = 2;
  return options;
}

HeadsTrainer CreateOrDie(const TrainerOptions& options, const ModelConfig& config, const std::vector<float>& classifier,
                         const std::vector<float>& embedding) {
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, config, classifier, embedding);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  return *std::move(trainer);
}

bool SameWeights(const MedusaHeadsWeights& a, const MedusaHeadsWeights& b) {
  if (a.num_heads != b.num_heads || a.num_layers != b.num_layers || a.kind != b.kind) return false;
  for (int k = 0; k < a.num_heads; ++k) {
    if (a.heads[k].projection != b.heads[k].projection) return false;
    for (int l = 0; l < a.num_layers; ++l) {
      if (a.heads[k].blocks[l].weight != b.heads[k].blocks[l].weight ||
          a.heads[k].blocks[l].bias != b.heads[k].blocks[l].bias) {
        return false;
      }
    }
  }
  return true;
}

// ------------------------------------------------------------------ gradients

// The loss of heads_trainer.h for Hydra heads, written plainly in double: head k's first block
// reads [h, E(next), E(target 0), .., E(target k-1)], a token past the text's end reading zeros.
double ReferenceLoss(const DoubleHeads& h, const std::vector<float>& embedding, const DistillSet& data,
                     const std::vector<int64_t>& rows, double decay, const std::vector<int32_t>& draft = {}) {
  double loss = 0.0;
  for (int k = 0; k < h.heads; ++k) {
    double sum = 0.0;
    int valid = 0;
    for (int64_t row : rows) {
      // Over a draft vocabulary the softmax covers its tokens alone, and targets outside it carry
      // no loss; the path still reads every token's own embedding.
      const int target = DraftColumn(data.targets[row * data.num_heads + k], draft);
      if (target < 0) continue;
      const std::vector<double> logits = ReferenceLogits(h, data, row, k, embedding, draft);
      sum += LogSumExp(logits) - logits[target];
      ++valid;
    }
    if (valid > 0) loss += std::pow(decay, k + 1) * sum / valid;
  }
  return loss;
}

void GradientCheck(bool share, const std::vector<int32_t>& draft = {}) {
  const int dim = 6, vocab = 11, heads = 3, layers = 2;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 11, 0.7f);
  const std::vector<float> embedding = RandomVector(static_cast<size_t>(vocab) * dim, 12, 0.8f);
  TrainerOptions options = HydraOptions(heads, layers, share);
  options.batch_size = 7;
  options.draft_vocab = draft;
  HeadsTrainer trainer = CreateOrDie(options, config, classifier, embedding);
  ASSERT_TRUE(trainer.SetHeads(RandomMedusaHeads(config, heads, layers, !share, 5, 0.3f, HeadKind::kHydra)).ok());
  const DistillSet data = RandomData(9, dim, heads, vocab, 21, 0.4);
  const std::vector<int64_t> rows = {0, 3, 1, 8, 5, 2, 7};
  absl::StatusOr<double> loss = trainer.ComputeLossAndGradients(data, rows);
  ASSERT_TRUE(loss.ok()) << loss.status();

  DoubleHeads ref = ToDouble(trainer.heads(), classifier);
  auto ref_loss = [&] { return ReferenceLoss(ref, embedding, data, rows, options.loss_decay, draft); };
  EXPECT_NEAR(*loss, ref_loss(), 1e-5 * ref_loss());
  const MedusaHeadsWeights& grads = trainer.gradients();
  for (int k = 0; k < heads; ++k) {
    EXPECT_EQ(grads.heads[k].blocks[0].weight.size(), static_cast<size_t>(dim) * (k + 2) * dim);
    for (int l = 0; l < layers; ++l) {
      CheckTensor(absl::StrCat("head ", k, " W", l), grads.heads[k].blocks[l].weight, ref.w[k][l], ref_loss);
      CheckTensor(absl::StrCat("head ", k, " b", l), grads.heads[k].blocks[l].bias, ref.b[k][l], ref_loss);
    }
    if (!share) CheckTensor(absl::StrCat("head ", k, " P"), grads.heads[k].projection, ref.p[k], ref_loss);
  }
}

TEST(HydraTrainerTest, GradientsMatchCentralDifferencesSharedProjection) { GradientCheck(true); }
TEST(HydraTrainerTest, GradientsMatchCentralDifferencesOwnProjection) { GradientCheck(false); }
TEST(HydraTrainerTest, GradientsMatchCentralDifferencesOverADraftVocabulary) { GradientCheck(true, {8, 1, 4, 10, 6}); }

// ------------------------------------------------------------------ forward

// The trainer's teacher-forced forward is the inference's: its top-k counts equal those of
// the float64 reference of what the backends compute (tests/support/reference_heads.h).
TEST(HydraTrainerTest, EvaluationAgreesWithTheInferenceReference) {
  const int dim = 12, vocab = 40, heads = 3, max_k = 8;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 5, 1.0f);
  const std::vector<float> embedding = RandomVector(static_cast<size_t>(vocab) * dim, 6, 1.0f);
  const DistillSet data = RandomData(120, dim, heads, vocab, 7, 0.2);
  for (bool own : {false, true}) {
    const MedusaHeadsWeights w = RandomMedusaHeads(config, heads, 2, own, 12, 0.3f, HeadKind::kHydra);
    absl::StatusOr<std::vector<std::vector<double>>> acc = EvaluateTopK(w, classifier, data, max_k, 2, embedding);
    ASSERT_TRUE(acc.ok()) << acc.status();
    std::vector<std::vector<int>> within(heads, std::vector<int>(max_k, 0));
    std::vector<int> valid(heads, 0);
    std::vector<double> logits;
    for (int r = 0; r < data.rows(); ++r) {
      for (int k = 0; k < heads; ++k) {
        const int target = data.Targets(r)[k];
        if (target < 0) continue;  // a valid target's path holds no -1
        ASSERT_TRUE(ComputeHydraHeadLogits(w, classifier, embedding, data.Hidden(r), data.Path(r, k), k, &logits).ok());
        ++valid[k];
        int above = 0;
        for (int v = 0; v < vocab; ++v) above += logits[v] > logits[target];
        for (int j = above; j < max_k; ++j) ++within[k][j];
      }
    }
    for (int k = 0; k < heads; ++k) {
      for (int j = 0; j < max_k; ++j) {
        EXPECT_DOUBLE_EQ((*acc)[k][j], static_cast<double>(within[k][j]) / valid[k])
            << "head " << k << " top-" << j + 1;
      }
      EXPECT_GT((*acc)[k][max_k - 1], (*acc)[k][0]) << "the counts must differ for the test to mean something";
    }
  }
}

// ------------------------------------------------------------------ learning

// Each target is a fixed function of the token before it on the path (next for head 0), and
// the hidden states are noise: only heads that read their path can learn it.
DistillSet PathDependentData(int rows, int dim, int heads, int vocab, uint64_t seed) {
  constexpr int kFirstTokens = 6;
  std::mt19937_64 map_rng(2000);
  std::vector<std::vector<int>> map(heads, std::vector<int>(vocab));
  for (auto& m : map) {
    for (int& t : m) t = static_cast<int>(map_rng() % vocab);
  }
  DistillSet data;
  data.dim = dim;
  data.num_heads = heads;
  data.hidden = RandomVector(static_cast<size_t>(rows) * dim, seed, 1.0f);
  std::mt19937_64 rng(seed + 1);
  for (int r = 0; r < rows; ++r) {
    int token = static_cast<int>(rng() % kFirstTokens);
    data.next.push_back(token);
    for (int k = 0; k < heads; ++k) {
      token = map[k][token];
      data.targets.push_back(token);
    }
  }
  return data;
}

TEST(HydraTrainerTest, LearnsWhatOnlyThePathTellsWhereMedusaHeadsCannot) {
  const int dim = 16, vocab = 24, heads = 2;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 42, 1.0f);
  const std::vector<float> embedding = RandomVector(static_cast<size_t>(vocab) * dim, 43, 1.0f);
  const DistillSet train = PathDependentData(3000, dim, heads, vocab, 1);
  const DistillSet held_out = PathDependentData(600, dim, heads, vocab, 2);
  std::vector<std::vector<double>> top1;
  for (HeadKind kind : {HeadKind::kHydra, HeadKind::kMedusa}) {
    TrainerOptions options = HydraOptions(heads, 1, /*share=*/false);
    options.head_kind = kind;
    options.batch_size = 32;
    options.epochs = 8;
    options.lr = 1e-2f;
    HeadsTrainer trainer = CreateOrDie(options, config, classifier, embedding);
    ASSERT_TRUE(trainer.Train(train).ok());
    absl::StatusOr<std::vector<std::vector<double>>> acc =
        EvaluateTopK(trainer.heads(), classifier, held_out, 1, 2, embedding);
    ASSERT_TRUE(acc.ok()) << acc.status();
    top1.push_back({(*acc)[0][0], (*acc)[1][0]});
    std::printf("%s heads: held-out top-1 %.3f %.3f\n", kind == HeadKind::kHydra ? "Hydra" : "Medusa", (*acc)[0][0],
                (*acc)[1][0]);
  }
  for (int k = 0; k < heads; ++k) {
    EXPECT_GT(top1[0][k], 0.9) << "Hydra head " << k;
    EXPECT_LT(top1[1][k], 0.5) << "Medusa head " << k << " sees only noise";
  }
}

// ------------------------------------------------------------------ checkpoints

TEST(HydraTrainerTest, CheckpointResumesBitIdenticallyAndLoadsAsHydraHeads) {
  const int dim = 8, vocab = 30, heads = 3;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 1, 1.0f);
  const std::vector<float> embedding = RandomVector(static_cast<size_t>(vocab) * dim, 2, 1.0f);
  const DistillSet data = RandomData(70, dim, heads, vocab, 3);
  TrainerOptions options = HydraOptions(heads, 2, /*share=*/true);
  options.batch_size = 10;
  options.epochs = 2;
  HeadsTrainer whole = CreateOrDie(options, config, classifier, embedding);
  ASSERT_TRUE(whole.Train(data).ok());

  const std::string path = ::testing::TempDir() + "/hydra_trainer_checkpoint.safetensors";
  std::filesystem::remove(path);
  TrainRunOptions run;
  run.checkpoint_path = path;
  run.stop_after_step = 9;
  {
    HeadsTrainer first = CreateOrDie(options, config, classifier, embedding);
    ASSERT_TRUE(absl::IsCancelled(first.Train(data, run)));
  }
  run.stop_after_step = 0;
  HeadsTrainer rest = CreateOrDie(options, config, classifier, embedding);
  ASSERT_TRUE(rest.Train(data, run).ok());
  EXPECT_TRUE(SameWeights(whole.heads(), rest.heads()));
  absl::StatusOr<MedusaHeadsWeights> loaded = LoadMedusaHeads(path, config);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->kind, HeadKind::kHydra);
  EXPECT_TRUE(SameWeights(*loaded, whole.heads()));

  // A Medusa run does not resume a Hydra checkpoint.
  TrainerOptions medusa = options;
  medusa.head_kind = HeadKind::kMedusa;
  HeadsTrainer other = CreateOrDie(medusa, config, classifier, embedding);
  absl::Status s = other.Train(data, run);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("head_type"));
}

// ------------------------------------------------------------------ data and errors

TEST(HydraTrainerTest, DistillSetKeepsNextTokensThroughSplitAndAppend) {
  const DistillSet data = RandomData(40, 4, 3, 9, 3);
  ASSERT_TRUE(data.has_next());
  auto [train, held] = data.Split(0.25, 7);
  ASSERT_EQ(train.next.size(), 30u);
  ASSERT_EQ(held.next.size(), 10u);
  DistillSet joined;
  ASSERT_TRUE(joined.Append(train).ok());
  ASSERT_TRUE(joined.Append(held).ok());
  ASSERT_TRUE(joined.Validate(9).ok());
  // Each row keeps its own next token: pair it with the row's first hidden value.
  std::vector<std::pair<float, int32_t>> a, b;
  for (int r = 0; r < 40; ++r)
    a.push_back({data.Hidden(r)[0], data.next[r]}), b.push_back({joined.Hidden(r)[0], joined.next[r]});
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
  EXPECT_EQ(data.Path(5, 2), (std::vector<int32_t>{data.next[5], data.Targets(5)[0], data.Targets(5)[1]}));

  DistillSet first = data;  // the first rows, whole: hidden, targets and next tokens together
  first.KeepFirst(15);
  ASSERT_TRUE(first.Validate(9).ok());
  ASSERT_EQ(first.rows(), 15);
  EXPECT_TRUE(first.has_next());
  EXPECT_EQ(first.Hidden(14)[3], data.Hidden(14)[3]);
  EXPECT_EQ(first.Path(14, 2), data.Path(14, 2));
  first.KeepFirst(99);  // more than there are: all kept
  EXPECT_EQ(first.rows(), 15);

  DistillSet without = data;
  without.next.clear();
  EXPECT_FALSE(joined.Append(without).ok()) << "rows with and without next tokens do not mix";
  EXPECT_FALSE(joined.Append(std::vector<float>(4), std::vector<int32_t>(3)).ok());
  EXPECT_TRUE(joined.Append(std::vector<float>(4), std::vector<int32_t>(3), 2).ok());
  DistillSet bad = data;
  bad.next[3] = 9;
  EXPECT_THAT(bad.Validate(9).message(), HasSubstr("row 3 has next token 9"));
  bad.next.pop_back();
  EXPECT_THAT(bad.Validate(9).message(), HasSubstr("next has 39 tokens"));
}

TEST(HydraTrainerTest, BadInputIsInvalidArgumentNamingTheProblem) {
  const ModelConfig config = Config(8, 20);
  const std::vector<float> classifier = RandomVector(160, 1, 1.0f);
  auto expect_invalid = [](const absl::Status& s, const std::string& names) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(names));
  };
  const TrainerOptions options = HydraOptions(2, 1, true);
  expect_invalid(HeadsTrainer::Create(options, config, classifier).status(), "Hydra heads need the model's embedding");
  expect_invalid(HeadsTrainer::Create(options, config, classifier, absl::MakeConstSpan(classifier).subspan(8)).status(),
                 "it has 152 values");
  HeadsTrainer trainer = CreateOrDie(options, config, classifier, classifier);
  DistillSet no_next = RandomData(5, 8, 2, 20, 1);
  no_next.next.clear();
  expect_invalid(trainer.Train(no_next), "next token");
  expect_invalid(trainer.SetHeads(RandomMedusaHeads(config, 2, 1, false, 1, 0.1f)), "do not match");

  const MedusaHeadsWeights hydra = RandomMedusaHeads(config, 2, 1, false, 1, 0.1f, HeadKind::kHydra);
  expect_invalid(EvaluateTopK(hydra, classifier, RandomData(5, 8, 2, 20, 1), 5).status(), "embedding");
  expect_invalid(EvaluateTopK(hydra, classifier, no_next, 5, 1, classifier).status(), "next token");
  std::vector<float> out(2 * 5 * 20);
  expect_invalid(ComputeHeadLogitsBatch(hydra, classifier, no_next.hidden, 5, absl::MakeSpan(out)), "path");
}

}  // namespace
}  // namespace medusa
