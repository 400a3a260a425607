// The teacher objective of the heads trainer (TrainerOptions::teacher_weight, Hydra++): each
// head learns the model's own distribution of its token, softmax(C h) at the position before
// it, found in the data by DistillSet::RowAhead. Checked against the texts the rows were made
// from, and the gradients against central differences of an independent double-precision loss
// that takes each teacher row from those texts, not from RowAhead.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/train/distill_set.h"
#include "engine/train/heads_trainer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/gradient_check.h"
#include "tests/support/random_heads.h"

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

// Rows as self-distillation writes them (self_distill.cc), one text after another, the whole
// text counted as answer: row t of a text of n tokens (t = 0 .. n - 3) has next token x[t+1]
// and targets x[t+k+2], -1 past the end. `last_row` gets, per row, its text's last row.
DistillSet TextRows(const std::vector<std::vector<int32_t>>& texts, int dim, int heads, uint64_t seed,
                    std::vector<int>* last_row = nullptr) {
  DistillSet data;
  data.dim = dim;
  data.num_heads = heads;
  for (const std::vector<int32_t>& x : texts) {
    const int n = static_cast<int>(x.size());
    const int first = static_cast<int>(data.next.size());
    for (int t = 0; t + 2 < n; ++t) {
      data.next.push_back(x[t + 1]);
      for (int k = 0; k < heads; ++k) data.targets.push_back(t + k + 2 < n ? x[t + k + 2] : -1);
      if (last_row != nullptr) last_row->push_back(first + n - 3);
    }
  }
  data.hidden = RandomVector(data.next.size() * dim, seed, 1.0f);
  return data;
}

TEST(TeacherObjectiveTest, RowAheadFollowsOneTextAndStopsAtItsEnd) {
  // The second text's first next token (7) is the first text's last token, and its row 0 ends
  // like the first text's rows do: only the -1 past the first text's end tells them apart.
  const std::vector<std::vector<int32_t>> texts = {{1, 2, 3, 4, 5, 6, 7}, {3, 7, 8, 9, 10, 11}, {4, 5, 6}};
  std::vector<int> last_row;
  const DistillSet data = TextRows(texts, 2, 3, 1, &last_row);
  ASSERT_EQ(data.rows(), 5 + 4 + 1);
  for (int r = 0; r < data.rows(); ++r) {
    for (int j = 1; j <= 4; ++j) {
      const int want = r + j <= last_row[r] ? r + j : -1;
      EXPECT_EQ(data.RowAhead(r, j), want) << "row " << r << ", " << j << " ahead";
    }
  }
  EXPECT_EQ(data.RowAhead(0, 0), -1);
  EXPECT_EQ(data.RowAhead(-1, 1), -1);

  DistillSet one_column = TextRows(texts, 2, 1, 1);  // a single target cannot mark a text's end
  EXPECT_EQ(one_column.RowAhead(0, 1), -1);
  DistillSet without_next = data;
  without_next.next.clear();
  EXPECT_EQ(without_next.RowAhead(0, 1), -1);
  DistillSet first = data;
  first.KeepFirst(7);  // the first text and the second's first two rows, in order
  EXPECT_EQ(first.RowAhead(5, 1), 6);
  EXPECT_EQ(first.RowAhead(5, 2), -1);
}

// Texts of random tokens, of lengths 3 to 9 (one ends before any head's teacher).
std::vector<std::vector<int32_t>> RandomTexts(int vocab, uint64_t seed) {
  std::vector<std::vector<int32_t>> texts;
  std::vector<float> noise = RandomVector(64, seed, 1.0f);
  size_t i = 0;
  for (int n : {9, 3, 7, 5, 8}) {
    std::vector<int32_t> x;
    for (int t = 0; t < n; ++t) x.push_back(static_cast<int32_t>(std::abs(noise[i++ % noise.size()]) * 997) % vocab);
    texts.push_back(x);
  }
  return texts;
}

// The loss of heads_trainer.h in double, with teacher rows from the texts' layout: head k of
// row r learns (1 - w) onehot(target) + w softmax(C h_{r+k+1}) when row r + k + 1 is in r's text
// (C over the draft vocabulary's rows).
double ReferenceLoss(const DoubleHeads& h, const std::vector<float>& classifier, const std::vector<float>& embedding,
                     const DistillSet& data, const std::vector<int>& last_row, const std::vector<int64_t>& rows,
                     double decay, double w, bool hydra, const std::vector<int32_t>& draft) {
  const int dim = h.dim;
  double loss = 0.0;
  for (int k = 0; k < h.heads; ++k) {
    double sum = 0.0;
    int valid = 0;
    for (int64_t row : rows) {
      const int target = DraftColumn(data.targets[row * data.num_heads + k], draft);
      if (target < 0) continue;
      const std::vector<double> logits =
          ReferenceLogits(h, data, row, k, hydra ? embedding : std::vector<float>{}, draft);
      const double log_z = LogSumExp(logits);
      double expected = logits[target];  // sum_v q_v z_v, q the target distribution
      const int64_t teacher_row = row + k + 1;
      if (teacher_row <=
          last_row[row]) {  // the frozen classifier on the teacher's state, whatever the heads project with
        std::vector<double> q;
        for (size_t i = 0; i < logits.size(); ++i) {
          const int v = draft.empty() ? static_cast<int>(i) : draft[i];
          double s = 0.0;
          for (int j = 0; j < dim; ++j)
            s += static_cast<double>(classifier[v * dim + j]) * data.hidden[teacher_row * dim + j];
          q.push_back(s);
        }
        const double q_log_z = LogSumExp(q);
        double soft = 0.0;
        for (size_t i = 0; i < q.size(); ++i) soft += std::exp(q[i] - q_log_z) * logits[i];
        expected = (1.0 - w) * logits[target] + w * soft;
      }
      sum += log_z - expected;
      ++valid;
    }
    if (valid > 0) loss += std::pow(decay, k + 1) * sum / valid;
  }
  return loss;
}

struct Case {
  HeadKind kind;
  bool share;
  std::vector<int32_t> draft;
  float teacher_weight;
};

void GradientCheck(const Case& c) {
  const int dim = 6, vocab = 11, heads = 3, layers = 2;
  ModelConfig config;
  config.dim = dim;
  config.vocab_size = vocab;
  const std::vector<float> classifier = RandomVector(static_cast<size_t>(vocab) * dim, 11, 0.9f);
  const std::vector<float> embedding = RandomVector(static_cast<size_t>(vocab) * dim, 12, 0.8f);
  TrainerOptions options;
  options.head_kind = c.kind;
  options.num_heads = heads;
  options.num_layers = layers;
  options.share_lm_head = c.share;
  options.batch_size = 9;
  options.threads = 2;
  options.draft_vocab = c.draft;
  options.teacher_weight = c.teacher_weight;
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, config, classifier, embedding);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE(trainer->SetHeads(RandomMedusaHeads(config, heads, layers, !c.share, 5, 0.3f, c.kind)).ok());
  std::vector<int> last_row;
  const DistillSet data = TextRows(RandomTexts(vocab, 3), dim, heads, 21, &last_row);
  ASSERT_EQ(data.rows(), 7 + 1 + 5 + 3 + 6);
  // Rows near the texts' ends (some heads without a teacher) and in the middle, shuffled.
  const std::vector<int64_t> rows = {6, 0, 7, 12, 3, 15, 8, 21, 18};
  absl::StatusOr<double> loss = trainer->ComputeLossAndGradients(data, rows);
  ASSERT_TRUE(loss.ok()) << loss.status();

  DoubleHeads ref = ToDouble(trainer->heads(), classifier);
  auto ref_loss = [&] {
    return ReferenceLoss(ref, classifier, embedding, data, last_row, rows, options.loss_decay, c.teacher_weight,
                         c.kind == HeadKind::kHydra, c.draft);
  };
  EXPECT_NEAR(*loss, ref_loss(), 1e-5 * ref_loss());
  const MedusaHeadsWeights& grads = trainer->gradients();
  for (int k = 0; k < heads; ++k) {
    for (int l = 0; l < layers; ++l) {
      CheckTensor(absl::StrCat("head ", k, " W", l), grads.heads[k].blocks[l].weight, ref.w[k][l], ref_loss);
      CheckTensor(absl::StrCat("head ", k, " b", l), grads.heads[k].blocks[l].bias, ref.b[k][l], ref_loss);
    }
    if (!c.share) CheckTensor(absl::StrCat("head ", k, " P"), grads.heads[k].projection, ref.p[k], ref_loss);
  }
}

TEST(TeacherObjectiveTest, HydraGradientsMatchCentralDifferencesTeacherOnly) {
  GradientCheck({HeadKind::kHydra, true, {}, 1.0f});
}
TEST(TeacherObjectiveTest, HydraGradientsMatchCentralDifferencesMixedOverADraftVocabulary) {
  GradientCheck({HeadKind::kHydra, true, {8, 1, 4, 10, 6, 2}, 0.6f});
}
TEST(TeacherObjectiveTest, MedusaGradientsMatchCentralDifferencesOwnProjection) {
  GradientCheck({HeadKind::kMedusa, false, {}, 0.5f});
}

// With weight 0 the teacher is never read: the loss is the token objective's, to the bit.
TEST(TeacherObjectiveTest, ZeroWeightIsTheTokenObjective) {
  ModelConfig config;
  config.dim = 6;
  config.vocab_size = 11;
  const std::vector<float> classifier = RandomVector(66, 11, 0.9f);
  const DistillSet data = TextRows(RandomTexts(11, 3), 6, 3, 21);
  TrainerOptions options;
  options.num_heads = 3;
  options.threads = 2;
  options.batch_size = 9;
  absl::StatusOr<HeadsTrainer> plain = HeadsTrainer::Create(options, config, classifier);
  options.teacher_weight = 1e-30f;  // reads the teacher, weighs it at nothing measurable
  absl::StatusOr<HeadsTrainer> teacher = HeadsTrainer::Create(options, config, classifier);
  ASSERT_TRUE(plain.ok() && teacher.ok());
  const MedusaHeadsWeights heads = RandomMedusaHeads(config, 3, 1, false, 5, 0.3f);
  ASSERT_TRUE(plain->SetHeads(heads).ok());
  ASSERT_TRUE(teacher->SetHeads(heads).ok());
  const std::vector<int64_t> rows = {6, 0, 7, 12, 3};
  absl::StatusOr<double> a = plain->ComputeLossAndGradients(data, rows);
  absl::StatusOr<double> b = teacher->ComputeLossAndGradients(data, rows);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NEAR(*a, *b, 1e-6 * *a);
  options.teacher_weight = 1.0f;
  absl::StatusOr<HeadsTrainer> full = HeadsTrainer::Create(options, config, classifier);
  ASSERT_TRUE(full.ok() && full->SetHeads(heads).ok());
  absl::StatusOr<double> c = full->ComputeLossAndGradients(data, rows);
  ASSERT_TRUE(c.ok());
  EXPECT_GT(std::abs(*c - *a), 1e-3) << "the teacher changes what the heads learn";
}

TEST(TeacherObjectiveTest, BadSettingsAndDataAreClearErrors) {
  ModelConfig config;
  config.dim = 6;
  config.vocab_size = 11;
  const std::vector<float> classifier = RandomVector(66, 11, 0.9f);
  TrainerOptions options;
  options.num_heads = 2;
  for (float bad : {-0.1f, 1.5f, std::nanf("")}) {
    options.teacher_weight = bad;
    const absl::Status s = HeadsTrainer::Create(options, config, classifier).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr("teacher_weight"));
  }
  options.teacher_weight = 0.5f;
  absl::StatusOr<HeadsTrainer> trainer = HeadsTrainer::Create(options, config, classifier);
  ASSERT_TRUE(trainer.ok());
  DistillSet without_next = TextRows(RandomTexts(11, 3), 6, 2, 21);
  without_next.next.clear();
  absl::Status s = trainer->Train(without_next);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("no next tokens"));

  // A checkpoint of a token-objective run does not resume a teacher run.
  const std::string path = ::testing::TempDir() + "/teacher_objective_checkpoint";
  std::filesystem::remove(path);
  const DistillSet data = TextRows(RandomTexts(11, 3), 6, 2, 21);
  TrainerOptions token = options;
  token.teacher_weight = 0.0f;
  TrainRunOptions run;
  run.checkpoint_path = path;
  absl::StatusOr<HeadsTrainer> first = HeadsTrainer::Create(token, config, classifier);
  ASSERT_TRUE(first.ok() && first->Train(data, run).ok());
  s = trainer->Train(data, run);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("teacher_weight"));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace medusa
