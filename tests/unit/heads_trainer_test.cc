// Medusa heads trainer: hand-written gradients against central differences of an
// independent double-precision loss, the forward against ComputeHeadLogits, the
// zero initialization, learning a synthetic task, determinism and checkpoint resume,
// top-k evaluation against a brute-force count, and input errors.

#include "engine/train/heads_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/medusa/heads_file.h"
#include "engine/train/heads_evaluation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
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

// Random hidden states and targets, with `missing` the chance of a -1 target.
DistillSet RandomData(int rows, int dim, int heads, int vocab, uint64_t seed, double missing = 0.2) {
  DistillSet data;
  data.dim = dim;
  data.num_heads = heads;
  data.hidden = RandomVector(static_cast<size_t>(rows) * dim, seed, 1.0f);
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int> token(0, vocab - 1);
  std::bernoulli_distribution drop(missing);
  for (int i = 0; i < rows * heads; ++i) data.targets.push_back(drop(rng) ? -1 : token(rng));
  return data;
}

std::string TempPath(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string path = ::testing::TempDir() + "/medusa_trainer_" + info->name() + "_" + name;
  std::filesystem::remove(path);
  return path;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  // An empty vector's data() may be null, which memcmp must not be given even for 0 bytes (UBSan).
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

bool SameHeads(const MedusaHeadsWeights& a, const MedusaHeadsWeights& b) {
  if (a.num_heads != b.num_heads || a.num_layers != b.num_layers) return false;
  for (int k = 0; k < a.num_heads; ++k) {
    if (!SameBits(a.heads[k].projection, b.heads[k].projection)) return false;
    for (int l = 0; l < a.num_layers; ++l) {
      if (!SameBits(a.heads[k].blocks[l].weight, b.heads[k].blocks[l].weight) ||
          !SameBits(a.heads[k].blocks[l].bias, b.heads[k].blocks[l].bias)) {
        return false;
      }
    }
  }
  return true;
}

HeadsTrainer CreateOrDie(const TrainerOptions& options, const ModelConfig& config,
                         const std::vector<float>& classifier) {
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, config, classifier);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  return *std::move(trainer);
}

// ------------------------------------------------------------------ double reference

// The loss as documented in heads_trainer.h, written plainly in double; over a draft
// vocabulary, the softmax covers its tokens alone and targets outside it carry no loss.
double ReferenceLoss(const DoubleHeads& h, const DistillSet& data, const std::vector<int64_t>& rows, double decay,
                     const std::vector<int32_t>& draft = {}) {
  double loss = 0.0;
  for (int k = 0; k < h.heads; ++k) {
    double sum = 0.0;
    int valid = 0;
    for (int64_t row : rows) {
      const int target = DraftColumn(data.targets[row * data.num_heads + k], draft);
      if (target < 0) continue;
      const std::vector<double> logits = ReferenceLogits(h, data, row, k, {}, draft);
      sum += LogSumExp(logits) - logits[target];
      ++valid;
    }
    if (valid > 0) loss += std::pow(decay, k + 1) * sum / valid;
  }
  return loss;
}

void GradientCheck(bool share, const std::vector<int32_t>& draft = {}) {
  const int dim = 8, vocab = 13, heads = 3, layers = 2;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 11, 0.7f);
  TrainerOptions options;
  options.num_heads = heads;
  options.num_layers = layers;
  options.share_lm_head = share;
  options.batch_size = 7;
  options.threads = 2;
  options.draft_vocab = draft;
  HeadsTrainer trainer = CreateOrDie(options, config, classifier);
  // Non-zero parameters, so SiLU' varies and every product in the chain matters.
  ASSERT_TRUE(trainer.SetHeads(RandomMedusaHeads(config, heads, layers, !share, 5, 0.4f)).ok());
  DistillSet data = RandomData(9, dim, heads, vocab, 21, 0.25);
  data.targets[1 * heads + 2] = -1;  // a gap in the middle of head 2
  const std::vector<int64_t> rows = {0, 3, 1, 8, 5, 2, 7};
  absl::StatusOr<double> loss = trainer.ComputeLossAndGradients(data, rows);
  ASSERT_TRUE(loss.ok()) << loss.status();

  DoubleHeads ref = ToDouble(trainer.heads(), classifier);
  auto ref_loss = [&] { return ReferenceLoss(ref, data, rows, options.loss_decay, draft); };
  EXPECT_NEAR(*loss, ref_loss(), 1e-5 * ref_loss());
  const MedusaHeadsWeights& grads = trainer.gradients();
  for (int k = 0; k < heads; ++k) {
    for (int l = 0; l < layers; ++l) {
      CheckTensor(absl::StrCat("head ", k, " W", l), grads.heads[k].blocks[l].weight, ref.w[k][l], ref_loss);
      CheckTensor(absl::StrCat("head ", k, " b", l), grads.heads[k].blocks[l].bias, ref.b[k][l], ref_loss);
    }
    if (share) {
      EXPECT_TRUE(grads.heads[k].projection.empty()) << "the shared classifier is frozen";
    } else {
      CheckTensor(absl::StrCat("head ", k, " P"), grads.heads[k].projection, ref.p[k], ref_loss);
    }
  }
}

TEST(HeadsTrainerTest, GradientsMatchCentralDifferencesSharedProjection) { GradientCheck(true); }
TEST(HeadsTrainerTest, GradientsMatchCentralDifferencesOwnProjection) { GradientCheck(false); }
// Seven of the 13 tokens, out of order: the data's other targets carry no loss.
TEST(HeadsTrainerTest, GradientsMatchCentralDifferencesOverADraftVocabulary) {
  GradientCheck(true, {12, 3, 7, 0, 9, 5, 10});
}

TEST(HeadsTrainerTest, DraftVocabularyTrainingNamesItsHeadsDraftAndRefusesBadLists) {
  const ModelConfig config = Config(8, 13);
  const std::vector<float> classifier = RandomVector(13 * 8, 11, 0.7f);
  TrainerOptions options;
  options.num_layers = 1;
  options.draft_vocab = {4, 2, 9};
  EXPECT_EQ(CreateOrDie(options, config, classifier).heads().draft_vocab, options.draft_vocab);
  auto status_of = [&](std::vector<int32_t> draft, bool share) {
    TrainerOptions bad = options;
    bad.draft_vocab = std::move(draft);
    bad.share_lm_head = share;
    return HeadsTrainer::Create(bad, config, classifier).status();
  };
  EXPECT_THAT(status_of({4, 2, 9}, false).message(), HasSubstr("own projections"));
  EXPECT_THAT(status_of({4, 13}, true).message(), HasSubstr("token 13, outside the vocabulary of 13"));
  EXPECT_THAT(status_of({4, -1}, true).message(), HasSubstr("token -1"));
  EXPECT_THAT(status_of({4, 2, 4}, true).message(), HasSubstr("token 4 twice"));
}

// ------------------------------------------------------------------ forward

TEST(HeadsTrainerTest, BatchForwardAgreesWithComputeHeadLogits) {
  const int dim = 16, vocab = 40, heads = 3, rows = 5;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 3, 1.0f);
  const std::vector<float> hidden = RandomVector(static_cast<size_t>(rows) * dim, 4, 1.0f);
  for (bool own : {false, true}) {
    const MedusaHeadsWeights w = RandomMedusaHeads(config, heads, 2, own, 9, 0.3f);
    std::vector<float> batch(static_cast<size_t>(heads) * rows * vocab);
    ASSERT_TRUE(ComputeHeadLogitsBatch(w, classifier, hidden, rows, absl::MakeSpan(batch), 2).ok());
    std::vector<float> single(static_cast<size_t>(heads) * vocab);
    for (int r = 0; r < rows; ++r) {
      ASSERT_TRUE(ComputeHeadLogits(w, classifier, absl::MakeConstSpan(hidden).subspan(r * dim, dim),
                                    absl::MakeSpan(single))
                      .ok());
      for (int k = 0; k < heads; ++k) {
        for (int v = 0; v < vocab; ++v) {
          const float want = single[k * vocab + v];
          EXPECT_NEAR(batch[(static_cast<size_t>(k) * rows + r) * vocab + v], want, 1e-4f * (1 + std::fabs(want)))
              << (own ? "own" : "shared") << " head " << k << " row " << r << " token " << v;
        }
      }
    }
  }
}

TEST(HeadsTrainerTest, ZeroInitializedHeadsAreTheClassifier) {
  const int dim = 24, vocab = 50, heads = 3, rows = 4;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 7, 1.0f);
  const std::vector<float> hidden = RandomVector(static_cast<size_t>(rows) * dim, 8, 1.0f);
  for (bool share : {true, false}) {
    TrainerOptions options;
    options.num_heads = heads;
    options.num_layers = 2;
    options.share_lm_head = share;
    HeadsTrainer trainer = CreateOrDie(options, config, classifier);
    const MedusaHeadsWeights& w = trainer.heads();
    ASSERT_EQ(w.has_projection(), !share);
    for (const MedusaHead& head : w.heads) {
      for (const MedusaResBlock& block : head.blocks) {
        EXPECT_TRUE(std::all_of(block.weight.begin(), block.weight.end(), [](float x) { return x == 0.0f; }));
        EXPECT_TRUE(std::all_of(block.bias.begin(), block.bias.end(), [](float x) { return x == 0.0f; }));
      }
      if (!share) {
        EXPECT_TRUE(SameBits(head.projection, classifier)) << "own projection is a copy";
      }
    }
    // The blocks are exact identities: the same logits, bit for bit, as heads without blocks.
    MedusaHeadsWeights no_blocks = w;
    no_blocks.num_layers = 0;
    for (MedusaHead& head : no_blocks.heads) head.blocks.clear();
    std::vector<float> with(static_cast<size_t>(heads) * rows * vocab), without(with.size());
    ASSERT_TRUE(ComputeHeadLogitsBatch(w, classifier, hidden, rows, absl::MakeSpan(with)).ok());
    ASSERT_TRUE(ComputeHeadLogitsBatch(no_blocks, classifier, hidden, rows, absl::MakeSpan(without)).ok());
    EXPECT_TRUE(SameBits(with, without));
    // ... and those are the classifier's logits of h.
    for (int k = 0; k < heads; ++k) {
      for (int r = 0; r < rows; ++r) {
        for (int v = 0; v < vocab; ++v) {
          double want = 0.0;
          for (int j = 0; j < dim; ++j) want += static_cast<double>(classifier[v * dim + j]) * hidden[r * dim + j];
          EXPECT_NEAR(with[(static_cast<size_t>(k) * rows + r) * vocab + v], want, 1e-4 * (1 + std::fabs(want)));
        }
      }
    }
  }
}

// ------------------------------------------------------------------ learning

// Targets a fixed function of h: head k predicts map_k[argmax(Q h)] for a random Q with a
// few rows, so the classes are cones a residual block can learn to steer.
DistillSet LearnableData(int rows, int dim, int heads, int vocab, uint64_t seed) {
  constexpr int kClasses = 6;
  const std::vector<float> q = RandomVector(static_cast<size_t>(kClasses) * dim, 1000, 1.0f);
  std::mt19937_64 rng(2000);
  std::vector<std::vector<int>> map(heads, std::vector<int>(kClasses));
  for (auto& m : map) {
    for (int& t : m) t = static_cast<int>(rng() % vocab);
  }
  DistillSet data;
  data.dim = dim;
  data.num_heads = heads;
  data.hidden = RandomVector(static_cast<size_t>(rows) * dim, seed, 1.0f);
  for (int r = 0; r < rows; ++r) {
    int best = 0;
    double best_score = -1e300;
    for (int c = 0; c < kClasses; ++c) {
      double s = 0.0;
      for (int j = 0; j < dim; ++j) s += q[c * dim + j] * data.hidden[r * dim + j];
      if (s > best_score) best_score = s, best = c;
    }
    for (int k = 0; k < heads; ++k) data.targets.push_back(map[k][best]);
  }
  return data;
}

void LearnsSyntheticTask(bool share) {
  const int dim = 16, vocab = 32, heads = 2;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 42, 1.0f);
  const DistillSet train = LearnableData(3000, dim, heads, vocab, 1);
  const DistillSet held_out = LearnableData(600, dim, heads, vocab, 2);
  TrainerOptions options;
  options.num_heads = heads;
  options.num_layers = 1;
  options.share_lm_head = share;
  options.batch_size = 32;
  options.epochs = 10;
  options.lr = 1e-2f;
  options.threads = 2;
  HeadsTrainer trainer = CreateOrDie(options, config, classifier);
  absl::StatusOr<std::vector<std::vector<double>>> before = EvaluateTopK(trainer.heads(), classifier, held_out, 1);
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<TrainProgress> reports;
  TrainRunOptions run;
  run.progress_every_steps = 50;
  run.on_progress = [&](const TrainProgress& p) { reports.push_back(p); };
  ASSERT_TRUE(trainer.Train(train, run).ok());
  absl::StatusOr<std::vector<std::vector<double>>> after = EvaluateTopK(trainer.heads(), classifier, held_out, 1);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_GE(reports.size(), 3u);
  EXPECT_EQ(reports.back().step, reports.back().total_steps);
  EXPECT_LT(reports.back().loss, 0.5 * reports.front().loss);
  for (int k = 0; k < heads; ++k) {
    std::printf("%s projection, head %d: held-out top-1 %.3f -> %.3f; loss %.3f -> %.3f\n", share ? "shared" : "own",
                k, (*before)[k][0], (*after)[k][0], reports.front().head_loss[k], reports.back().head_loss[k]);
    EXPECT_LT((*before)[k][0], 0.3);
    // An own projection can fit the task; the frozen shared classifier limits what a
    // residual block can steer to (head 0's tokens are harder to reach than head 1's).
    const double floor = share ? 0.55 : 0.85;
    EXPECT_GT((*after)[k][0], floor) << "head " << k;
    EXPECT_GT(reports.back().top1[k], floor) << "head " << k;
  }
}

TEST(HeadsTrainerTest, LearnsSyntheticTaskSharedProjection) { LearnsSyntheticTask(true); }
TEST(HeadsTrainerTest, LearnsSyntheticTaskOwnProjection) { LearnsSyntheticTask(false); }

TEST(HeadsTrainerTest, LearningRateWarmsUpThenDecaysByCosine) {
  TrainerOptions options;
  options.lr = 1e-3f;
  options.warmup_steps = 10;
  options.min_lr_ratio = 0.1f;
  EXPECT_DOUBLE_EQ(LearningRate(options, 0, 110), static_cast<double>(1e-3f) / 10);
  EXPECT_DOUBLE_EQ(LearningRate(options, 9, 110), static_cast<double>(1e-3f));
  EXPECT_DOUBLE_EQ(LearningRate(options, 10, 110), static_cast<double>(1e-3f));
  EXPECT_NEAR(LearningRate(options, 109, 110), 1e-4, 1e-10);
  EXPECT_NEAR(LearningRate(options, 60, 111), 0.55e-3, 1e-9);  // the cosine's midpoint
  for (int s = 10; s + 1 < 110; ++s) EXPECT_GE(LearningRate(options, s, 110), LearningRate(options, s + 1, 110));
  options.warmup_steps = -1;
  EXPECT_EQ(WarmupSteps(options, 95), 10);
  EXPECT_EQ(WarmupSteps(options, 1), 1);
}

// ------------------------------------------------------------------ determinism, checkpoints

struct SmallProblem {
  ModelConfig config = Config(12, 30);
  std::vector<float> classifier = RandomVector(30 * 12, 77, 1.0f);
  DistillSet data = RandomData(50, 12, 3, 30, 78);
  TrainerOptions Options(bool share) const {
    TrainerOptions o;
    o.num_heads = 3;
    o.num_layers = 2;
    o.share_lm_head = share;
    o.batch_size = 8;  // 7 steps per epoch, the last one of 2 rows
    o.epochs = 2;
    o.lr = 5e-3f;
    o.weight_decay = 0.01f;
    o.seed = 3;
    o.threads = 2;
    return o;
  }
};

TEST(HeadsTrainerTest, SameSeedGivesBitIdenticalWeights) {
  SmallProblem p;
  HeadsTrainer a = CreateOrDie(p.Options(true), p.config, p.classifier);
  HeadsTrainer b = CreateOrDie(p.Options(true), p.config, p.classifier);
  ASSERT_TRUE(a.Train(p.data).ok());
  ASSERT_TRUE(b.Train(p.data).ok());
  EXPECT_EQ(a.step(), 14);
  EXPECT_TRUE(SameHeads(a.heads(), b.heads()));
  EXPECT_FALSE(SameHeads(a.heads(), CreateOrDie(p.Options(true), p.config, p.classifier).heads())) << "it trained";
  TrainerOptions other_seed = p.Options(true);
  other_seed.seed = 4;
  HeadsTrainer c = CreateOrDie(other_seed, p.config, p.classifier);
  ASSERT_TRUE(c.Train(p.data).ok());
  EXPECT_FALSE(SameHeads(a.heads(), c.heads())) << "the seed shuffles the rows";
}

void ResumeMatchesUninterrupted(bool share) {
  SmallProblem p;
  HeadsTrainer whole = CreateOrDie(p.Options(share), p.config, p.classifier);
  ASSERT_TRUE(whole.Train(p.data).ok());

  const std::string path = TempPath(share ? "shared.safetensors" : "own.safetensors");
  TrainRunOptions run;
  run.checkpoint_path = path;
  run.checkpoint_every_steps = 3;
  run.stop_after_step = 5;  // mid-epoch, between two periodic checkpoints
  {
    HeadsTrainer first = CreateOrDie(p.Options(share), p.config, p.classifier);
    absl::Status stopped = first.Train(p.data, run);
    ASSERT_TRUE(absl::IsCancelled(stopped)) << stopped;
    EXPECT_THAT(stopped.message(), HasSubstr("step 5 of 14"));
  }
  ASSERT_FALSE(std::filesystem::exists(path + ".tmp"));
  run.stop_after_step = 9;  // into the second epoch
  {
    HeadsTrainer second = CreateOrDie(p.Options(share), p.config, p.classifier);
    ASSERT_TRUE(absl::IsCancelled(second.Train(p.data, run)));
    EXPECT_EQ(second.step(), 9);
  }
  run.stop_after_step = 0;
  HeadsTrainer last = CreateOrDie(p.Options(share), p.config, p.classifier);
  std::vector<int64_t> steps;
  run.progress_every_steps = 1;
  run.on_progress = [&](const TrainProgress& pr) { steps.push_back(pr.step); };
  ASSERT_TRUE(last.Train(p.data, run).ok());
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 11, 12, 13, 14}));
  EXPECT_TRUE(SameHeads(whole.heads(), last.heads()));

  // The checkpoint's heads load as Medusa heads (combined-file layout).
  absl::StatusOr<MedusaHeadsWeights> loaded = LoadMedusaHeads(path, p.config);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(SameHeads(*loaded, whole.heads()));
  // A finished checkpoint resumes to nothing to do.
  HeadsTrainer again = CreateOrDie(p.Options(share), p.config, p.classifier);
  ASSERT_TRUE(again.Train(p.data, run).ok());
  EXPECT_EQ(again.step(), 14);
  EXPECT_TRUE(SameHeads(whole.heads(), again.heads()));
}

TEST(HeadsTrainerTest, ResumeMatchesUninterruptedSharedProjection) { ResumeMatchesUninterrupted(true); }
TEST(HeadsTrainerTest, ResumeMatchesUninterruptedOwnProjection) { ResumeMatchesUninterrupted(false); }

TEST(HeadsTrainerTest, MismatchedCheckpointIsAClearError) {
  SmallProblem p;
  const std::string path = TempPath("ckpt.safetensors");
  TrainRunOptions run;
  run.checkpoint_path = path;
  run.stop_after_step = 2;
  {
    HeadsTrainer t = CreateOrDie(p.Options(true), p.config, p.classifier);
    ASSERT_TRUE(absl::IsCancelled(t.Train(p.data, run)));
  }
  auto expect_error = [&](const TrainerOptions& options, const DistillSet& data, const std::vector<float>& classifier,
                          const std::string& names) {
    HeadsTrainer t = CreateOrDie(options, p.config, classifier);
    absl::Status s = t.Train(data, run);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(s.message(), HasSubstr(names));
    EXPECT_THAT(s.message(), HasSubstr(path));
  };
  TrainerOptions batch = p.Options(true);
  batch.batch_size = 16;
  expect_error(batch, p.data, p.classifier, "batch_size");
  TrainerOptions lr = p.Options(true);
  lr.lr = 1e-3f;
  expect_error(lr, p.data, p.classifier, "lr = ");
  TrainerOptions own = p.Options(true);
  own.share_lm_head = false;
  expect_error(own, p.data, p.classifier, "share_lm_head");
  DistillSet other = p.data;
  other.targets[5] = (other.targets[5] + 1) % 30;
  expect_error(p.Options(true), other, p.classifier, "data");
  std::vector<float> other_classifier = p.classifier;
  other_classifier[0] += 1.0f;
  expect_error(p.Options(true), p.data, other_classifier, "classifier");
  // A file that is not a trainer checkpoint.
  ASSERT_TRUE(SaveMedusaHeads(path, RandomMedusaHeads(p.config, 3, 2, false, 1, 0.1f), nlohmann::json()).ok());
  expect_error(p.Options(true), p.data, p.classifier, "not a trainer checkpoint");
  // Crafted states: keys missing or of other types, nesting past the limit.
  const MedusaHeadsWeights heads = RandomMedusaHeads(p.config, 3, 2, false, 1, 0.1f);
  for (const auto& [state, names] : std::vector<std::pair<std::string, std::string>>{
           {"{}", "format null"},
           {R"({"format": 5})", "format 5"},
           {R"({"format": "medusa-heads-trainer/1", "options": []})", "it was written with"},
           {R"({"format": "medusa-heads-trainer/1", "options": {"lr": "x"}})", "it was written with"},
           {std::string(100000, '[') + std::string(100000, ']'), "not a JSON object"}}) {
    SCOPED_TRACE(state.substr(0, 80));
    ASSERT_TRUE(SaveMedusaHeads(path, heads, nlohmann::json{{"medusa_trainer_state", state}}).ok());
    expect_error(p.Options(true), p.data, p.classifier, names);
  }
}

// ------------------------------------------------------------------ evaluation

TEST(HeadsTrainerTest, EvaluateTopKIsMonotoneAndEqualsBruteForce) {
  const int dim = 10, vocab = 50, heads = 3, max_k = 10;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 5, 1.0f);
  const DistillSet data = RandomData(150, dim, 4, vocab, 6, 0.1);  // more target columns than heads
  for (bool own : {false, true}) {
    const MedusaHeadsWeights w = RandomMedusaHeads(config, heads, 1, own, 12, 0.3f);
    absl::StatusOr<std::vector<std::vector<double>>> acc = EvaluateTopK(w, classifier, data, max_k, 2);
    ASSERT_TRUE(acc.ok()) << acc.status();
    ASSERT_EQ(acc->size(), static_cast<size_t>(heads));
    std::vector<float> logits(static_cast<size_t>(heads) * vocab);
    std::vector<std::vector<int>> within(heads, std::vector<int>(max_k, 0));
    std::vector<int> valid(heads, 0);
    for (int r = 0; r < data.rows(); ++r) {
      ASSERT_TRUE(ComputeHeadLogits(w, classifier, data.Hidden(r), absl::MakeSpan(logits)).ok());
      for (int k = 0; k < heads; ++k) {
        const int target = data.Targets(r)[k];
        if (target < 0) continue;
        ++valid[k];
        int above = 0;
        for (int v = 0; v < vocab; ++v) above += logits[k * vocab + v] > logits[k * vocab + target];
        for (int j = above; j < max_k; ++j) ++within[k][j];
      }
    }
    for (int k = 0; k < heads; ++k) {
      ASSERT_EQ((*acc)[k].size(), static_cast<size_t>(max_k));
      for (int j = 0; j < max_k; ++j) {
        EXPECT_DOUBLE_EQ((*acc)[k][j], static_cast<double>(within[k][j]) / valid[k]) << "head " << k << " top-" << j + 1;
        if (j > 0) {
          EXPECT_GE((*acc)[k][j], (*acc)[k][j - 1]);
        }
      }
      EXPECT_GT((*acc)[k][max_k - 1], (*acc)[k][0]) << "the counts must differ for the test to mean something";
    }
  }
}

// Targets set to each head's own top token on some rows and to another on others, so chains of
// every length occur; the chain accuracy must count them exactly.
TEST(HeadsTrainerTest, EvaluateHeadsCountsChainsOfRightHeads) {
  const int dim = 10, vocab = 50, heads = 3;
  const ModelConfig config = Config(dim, vocab);
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 5, 1.0f);
  DistillSet data = RandomData(120, dim, heads, vocab, 6, 0.0);
  const MedusaHeadsWeights w = RandomMedusaHeads(config, heads, 1, false, 12, 0.3f);
  std::vector<float> logits(static_cast<size_t>(heads) * vocab);
  std::mt19937 rng(3);
  std::vector<int> valid(heads, 0), chain(heads, 0), right(heads, 0);
  for (int r = 0; r < data.rows(); ++r) {
    ASSERT_TRUE(ComputeHeadLogits(w, classifier, data.Hidden(r), absl::MakeSpan(logits)).ok());
    const int end = static_cast<int>(rng() % (heads + 1));  // the text ends after `end` targets
    bool all = true;
    for (int k = 0; k < heads; ++k) {
      const float* z = logits.data() + static_cast<size_t>(k) * vocab;
      const int best = static_cast<int>(std::max_element(z, z + vocab) - z);
      const bool hit = rng() % 3 != 0;
      int32_t& target = data.targets[static_cast<size_t>(r) * heads + k];
      target = k >= end ? -1 : hit ? best : (best + 1) % vocab;
      if (target < 0) continue;
      ++valid[k];
      right[k] += hit;
      all = all && hit;
      chain[k] += all;
    }
  }
  absl::StatusOr<HeadsAccuracy> acc = EvaluateHeads(w, classifier, data, 5, 2);
  ASSERT_TRUE(acc.ok()) << acc.status();
  ASSERT_EQ(acc->chain_top1.size(), static_cast<size_t>(heads));
  for (int k = 0; k < heads; ++k) {
    EXPECT_DOUBLE_EQ(acc->topk[k][0], static_cast<double>(right[k]) / valid[k]) << "head " << k;
    EXPECT_DOUBLE_EQ(acc->chain_top1[k], static_cast<double>(chain[k]) / valid[k]) << "head " << k;
  }
  EXPECT_LT(acc->chain_top1[2], acc->chain_top1[0]) << "chains must shorten for the test to mean something";
}

// ------------------------------------------------------------------ bad input

TEST(HeadsTrainerTest, BadInputIsInvalidArgumentNamingTheProblem) {
  const ModelConfig config = Config(8, 20);
  const std::vector<float> classifier = RandomVector(160, 1, 1.0f);
  TrainerOptions options;
  options.num_heads = 2;
  auto expect_invalid = [](const absl::Status& s, const std::string& names) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(names));
  };
  expect_invalid(HeadsTrainer::Create(options, config, absl::MakeConstSpan(classifier).subspan(8)).status(),
                 "classifier has 152 values, expected vocab 20 x dim 8");
  TrainerOptions bad = options;
  bad.batch_size = 0;
  expect_invalid(HeadsTrainer::Create(bad, config, classifier).status(), "batch_size");
  bad = options;
  bad.lr = -1.0f;
  expect_invalid(HeadsTrainer::Create(bad, config, classifier).status(), "lr");

  HeadsTrainer trainer = CreateOrDie(options, config, classifier);
  DistillSet empty;
  empty.dim = 8;
  empty.num_heads = 2;
  expect_invalid(trainer.Train(empty), "empty");
  expect_invalid(trainer.Train(RandomData(5, 6, 2, 20, 1)), "dim 6 but the model's dim is 8");
  expect_invalid(trainer.Train(RandomData(5, 8, 1, 20, 1)), "targets for 1 heads, fewer than the 2 heads");
  DistillSet out_of_vocab = RandomData(5, 8, 2, 20, 1);
  out_of_vocab.targets[7] = 20;
  expect_invalid(trainer.Train(out_of_vocab), "row 3 head 1 has target 20");
  DistillSet ragged = RandomData(5, 8, 2, 20, 1);
  ragged.targets.pop_back();
  expect_invalid(trainer.Train(ragged), "targets has 9 values");
  expect_invalid(trainer.SetHeads(RandomMedusaHeads(config, 3, 1, false, 1, 0.1f)), "do not match");

  const DistillSet data = RandomData(5, 8, 2, 20, 1);
  const MedusaHeadsWeights heads = RandomMedusaHeads(config, 2, 1, false, 1, 0.1f);
  expect_invalid(EvaluateTopK(heads, absl::MakeConstSpan(classifier).subspan(1), data, 5).status(), "classifier");
  expect_invalid(EvaluateTopK(heads, classifier, RandomData(5, 6, 2, 20, 1), 5).status(), "dim");
  expect_invalid(EvaluateTopK(heads, classifier, data, 0).status(), "max_k");
  std::vector<float> out(2 * 5 * 20);
  expect_invalid(ComputeHeadLogitsBatch(heads, classifier, data.hidden, 4, absl::MakeSpan(out)), "hidden");
}

TEST(DistillSetTest, SplitAndAppendKeepRows) {
  const DistillSet data = RandomData(40, 4, 2, 9, 3);
  auto [train, held] = data.Split(0.25, 7);
  EXPECT_EQ(held.rows(), 10);
  EXPECT_EQ(train.rows(), 30);
  DistillSet joined;
  ASSERT_TRUE(joined.Append(train).ok());
  ASSERT_TRUE(joined.Append(held).ok());
  EXPECT_EQ(joined.rows(), 40);
  // Every row lands in exactly one part (compare as multisets of first hidden values).
  std::vector<float> a, b;
  for (int r = 0; r < 40; ++r) a.push_back(data.Hidden(r)[0]), b.push_back(joined.Hidden(r)[0]);
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
  EXPECT_FALSE(joined.Append(RandomData(1, 5, 2, 9, 1)).ok());
  EXPECT_FALSE(joined.Append(std::vector<float>(4), std::vector<int32_t>(3)).ok());
}

}  // namespace
}  // namespace medusa
