// Rejection sampling over a Medusa tree (Acceptor::AcceptRejection): on a hand-built tree
// with constructed distributions, every emitted token is distributed exactly as plain
// sampling draws it (chi-square against the sampler's own distribution, for the first,
// second and third token of a step), with and without top-k / top-p. The same test on
// typical acceptance fails, so it can tell an exact rule from an approximate one. Also:
// greedy params give greedy acceptance, seeded determinism, and the option's names.

#include <cmath>
#include <cstdio>
#include <string>
#include <map>
#include <random>
#include <vector>

#include "engine/medusa/acceptance.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace medusa {
namespace {

constexpr int kVocab = 10;

// Nodes: 0 root, 1 [0], 2 [1], 3 [2], 4 [0,0], 5 [0,1], 6 [1,0], 7 [0,0,0].
MedusaTree Tree() { return *MedusaTree::FromPaths({{0}, {1}, {2}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 0}}, 3); }
// Node tokens: siblings distinct. The root's children try 4, 7, 1 in that order.
const std::vector<int32_t> kTokens = {0, 4, 7, 1, 2, 5, 2, 9};

// Logits per node row: fixed random values, with each row's candidates made likely
// enough to be accepted often and rejected often.
std::vector<float> Logits() {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(kTokens.size() * kVocab);
  for (float& l : logits) l = normal(rng);
  logits[0 * kVocab + 4] += 1.5f;  // root: 4 likely, 7 fairly likely
  logits[0 * kVocab + 7] += 1.0f;
  logits[1 * kVocab + 2] += 1.2f;  // after 4: 2 likely
  logits[4 * kVocab + 9] += 1.0f;  // after 4, 2: 9 fairly likely
  return logits;
}

absl::Span<const float> Row(const std::vector<float>& logits, int node) {
  return absl::MakeConstSpan(logits).subspan(static_cast<size_t>(node) * kVocab, kVocab);
}

// Pearson's chi-square of observed counts against probabilities; a count where the
// probability is 0 makes it infinite. Bins with expected counts below 5 are pooled.
double ChiSquare(const std::vector<int>& observed, const std::vector<float>& probs, int* degrees) {
  long total = 0;
  for (int c : observed) total += c;
  double chi2 = 0, pooled_expected = 0, pooled_observed = 0;
  *degrees = -1;
  for (size_t i = 0; i < observed.size(); ++i) {
    const double expected = probs[i] * static_cast<double>(total);
    if (probs[i] == 0.0f) {
      if (observed[i] > 0) return INFINITY;
      continue;
    }
    if (expected < 5) {
      pooled_expected += expected;
      pooled_observed += observed[i];
      continue;
    }
    chi2 += (observed[i] - expected) * (observed[i] - expected) / expected;
    ++*degrees;
  }
  if (pooled_expected > 0) {
    chi2 += (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++*degrees;
  }
  return chi2;
}

// A bound the statistic passes with probability far above 1 - 1e-6 for a true
// distribution (mean df, standard deviation sqrt(2 df)); the draws are seeded, so the
// test is deterministic either way.
double Bound(int degrees) { return degrees + 7.0 * std::sqrt(2.0 * degrees) + 10.0; }

struct Counts {
  std::vector<int> first = std::vector<int>(kVocab, 0);
  std::map<int32_t, std::vector<int>> second;  // by the first token
  std::vector<int> third_after_4_2 = std::vector<int>(kVocab, 0);
  long steps = 0, accepted = 0;
};

Counts RunSteps(SamplingAcceptance rule, const SamplingParams& params, int steps) {
  const MedusaTree tree = Tree();
  const std::vector<float> logits = Logits();
  Acceptor acceptor(tree, kVocab, AcceptanceOptions{.rule = rule});
  Sampler sampler(params);
  Counts counts;
  for (int i = 0; i < steps; ++i) {
    absl::StatusOr<const AcceptedPath*> path = acceptor.Accept(kTokens, logits, sampler);
    EXPECT_TRUE(path.ok()) << path.status();
    if (!path.ok()) break;
    const std::vector<int32_t>& t = (*path)->tokens;
    ++counts.first[t[0]];
    if (t.size() > 1) {
      auto& second = counts.second[t[0]];
      second.resize(kVocab, 0);
      ++second[t[1]];
    }
    if (t.size() > 2 && t[0] == 4 && t[1] == 2) ++counts.third_after_4_2[t[2]];
    ++counts.steps;
    counts.accepted += (*path)->accepted();
  }
  return counts;
}

std::vector<float> Target(const SamplingParams& params, absl::Span<const float> row) {
  Sampler sampler(params);
  std::vector<float> probs;
  sampler.Distribution(row, &probs);
  return probs;
}

int Total(const std::vector<int>& counts) {
  int total = 0;
  for (int c : counts) total += c;
  return total;
}

// One chi-square check, printed; returns whether it ran (enough draws to judge).
bool Check(const char* what, const std::vector<int>& observed, const std::vector<float>& probs) {
  if (Total(observed) < 1000) return false;
  int df = 0;
  const double chi2 = ChiSquare(observed, probs, &df);
  std::printf("%-28s %7d draws: chi2 %8.2f, df %d (bound %.1f)\n", what, Total(observed), chi2, df, Bound(df));
  EXPECT_LT(chi2, Bound(df)) << what << ", df " << df;
  return true;
}

// Every token a step emits, against the sampler's distribution of the row it was drawn from.
void ExpectExact(const Counts& counts, const SamplingParams& params) {
  const std::vector<float> logits = Logits();
  EXPECT_TRUE(Check("first token", counts.first, Target(params, Row(logits, 0))));
  // After an accepted child c of the root, the next token follows c's row. (A first
  // token equal to a candidate means that candidate was accepted: a rejected token's
  // mass is gone from the residual.)
  int checked = 0;
  for (const auto& [first, node] : std::map<int32_t, int>{{4, 1}, {7, 2}, {1, 3}}) {
    auto it = counts.second.find(first);
    if (it == counts.second.end()) continue;  // top-k / top-p may exclude a candidate
    const std::string what = "second token after " + std::to_string(first);
    checked += Check(what.c_str(), it->second, Target(params, Row(logits, node)));
  }
  EXPECT_GE(checked, 1);
  Check("third token after 4, 2", counts.third_after_4_2, Target(params, Row(logits, 4)));
}

TEST(RejectionSamplingTest, EveryTokenHasThePlainSamplingDistribution) {
  const SamplingParams params{.temperature = 1.0f, .seed = 11};
  const Counts counts = RunSteps(SamplingAcceptance::kRejection, params, 200000);
  ExpectExact(counts, params);
  // Drafts are accepted (the test exercises acceptance, not only the residual).
  EXPECT_GT(counts.second.at(4).size(), 0u);
  EXPECT_GT(double(counts.accepted) / counts.steps, 0.5);
}

TEST(RejectionSamplingTest, ExactUnderTopKTopPAndLowTemperature) {
  for (const SamplingParams& params : {SamplingParams{.temperature = 0.6f, .top_k = 4, .seed = 12},
                                       SamplingParams{.temperature = 1.3f, .top_p = 0.8f, .seed = 13},
                                       SamplingParams{.temperature = 0.7f, .top_k = 6, .top_p = 0.9f, .seed = 14}}) {
    SCOPED_TRACE(::testing::Message() << "temperature " << params.temperature << " top_k " << params.top_k
                                      << " top_p " << params.top_p);
    ExpectExact(RunSteps(SamplingAcceptance::kRejection, params, 100000), params);
  }
}

// The same check on typical acceptance must fail: it keeps a likely draft every time,
// so the first token is 4 far more often than p(4). This shows the check has power.
TEST(RejectionSamplingTest, TypicalAcceptanceFailsTheSameCheck) {
  const SamplingParams params{.temperature = 1.0f, .seed = 11};
  const Counts counts = RunSteps(SamplingAcceptance::kTypical, params, 20000);
  int df = 0;
  const double chi2 = ChiSquare(counts.first, Target(params, Row(Logits(), 0)), &df);
  EXPECT_GT(chi2, 10 * Bound(df));
}

TEST(RejectionSamplingTest, GreedyParamsGiveGreedyAcceptance) {
  const MedusaTree tree = Tree();
  const std::vector<float> logits = Logits();
  Acceptor rejection(tree, kVocab, AcceptanceOptions{.rule = SamplingAcceptance::kRejection});
  Acceptor greedy(tree, kVocab);
  Sampler sampler(SamplingParams{});
  absl::StatusOr<const AcceptedPath*> a = rejection.Accept(kTokens, logits, sampler);
  absl::StatusOr<const AcceptedPath*> b = greedy.AcceptGreedy(kTokens, logits);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->nodes, (*b)->nodes);
  EXPECT_EQ((*a)->tokens, (*b)->tokens);
}

TEST(RejectionSamplingTest, SameSeedSamePaths) {
  const MedusaTree tree = Tree();
  const std::vector<float> logits = Logits();
  auto paths = [&](uint64_t seed) {
    Acceptor acceptor(tree, kVocab, AcceptanceOptions{.rule = SamplingAcceptance::kRejection});
    Sampler sampler(SamplingParams{.temperature = 1.0f, .seed = seed});
    std::vector<std::vector<int32_t>> out;
    for (int i = 0; i < 50; ++i) out.push_back((*acceptor.Accept(kTokens, logits, sampler))->tokens);
    return out;
  };
  EXPECT_EQ(paths(3), paths(3));
  EXPECT_NE(paths(3), paths(4));
}

TEST(RejectionSamplingTest, SizeErrorsAreReported) {
  const MedusaTree tree = Tree();
  Acceptor acceptor(tree, kVocab, AcceptanceOptions{.rule = SamplingAcceptance::kRejection});
  Sampler sampler(SamplingParams{.temperature = 1.0f});
  const std::vector<float> short_logits(kVocab);
  EXPECT_EQ(acceptor.Accept(kTokens, short_logits, sampler).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RejectionSamplingTest, AcceptanceNames) {
  EXPECT_EQ(*ParseSamplingAcceptance("typical"), SamplingAcceptance::kTypical);
  EXPECT_EQ(*ParseSamplingAcceptance("rejection"), SamplingAcceptance::kRejection);
  EXPECT_THAT(std::string(ParseSamplingAcceptance("exact").status().message()),
              ::testing::HasSubstr("typical or rejection"));
}

}  // namespace
}  // namespace medusa
