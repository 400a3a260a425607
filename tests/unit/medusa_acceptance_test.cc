// Medusa acceptance: greedy and typical acceptance on hand-built trees, the typical
// criterion at its boundaries, typical -> greedy as the temperature goes to 0, and
// property tests against a direct (slow) implementation of the rules on random trees.

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "engine/medusa/acceptance.h"
#include "engine/medusa/candidates.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/softmax_stats.h"

namespace medusa {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Nodes: 0 root, 1 [0], 2 [1], 3 [0,0], 4 [0,1], 5 [1,0], 6 [0,0,0].
MedusaTree SmallTree() { return *MedusaTree::FromPaths({{0}, {1}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 0}}, 3); }
const std::vector<int32_t> kSmallTokens = {9, 7, 3, 2, 4, 2, 1};
constexpr int kVocab = 10;

// Rows whose argmax is the given token (0 elsewhere, 1 at the token).
std::vector<float> ArgmaxRows(const std::vector<int32_t>& argmax) {
  std::vector<float> logits(argmax.size() * kVocab, 0.0f);
  for (size_t n = 0; n < argmax.size(); ++n) logits[n * kVocab + argmax[n]] = 1.0f;
  return logits;
}

const AcceptedPath& GreedyOrDie(Acceptor& acceptor, absl::Span<const int32_t> tokens,
                                absl::Span<const float> logits) {
  absl::StatusOr<const AcceptedPath*> path = acceptor.AcceptGreedy(tokens, logits);
  EXPECT_TRUE(path.ok()) << path.status();
  static const AcceptedPath kEmpty;
  return path.ok() ? **path : kEmpty;
}

// ------------------------------------------------------------------ greedy by hand

TEST(GreedyAcceptanceTest, SmallTreeByHand) {
  MedusaTree tree = SmallTree();
  Acceptor acceptor(tree, kVocab);
  // Row argmaxes per node; tokens are 9, 7, 3, 2, 4, 2, 1.
  // root -> 7 (node 1), node 1 -> 4 (node 4), node 4 -> 8: bonus. Node 3 would pass
  // under node 6's row, but node 3 itself is rejected, so node 6 must not count.
  const AcceptedPath& a = GreedyOrDie(acceptor, kSmallTokens, ArgmaxRows({7, 4, 0, 1, 8, 0, 0}));
  EXPECT_THAT(a.nodes, ElementsAre(0, 1, 4));
  EXPECT_THAT(a.tokens, ElementsAre(7, 4, 8));
  EXPECT_EQ(a.accepted(), 2);
  EXPECT_EQ(a.last_node(), 4);
  EXPECT_EQ(a.bonus_token(), 8);

  // root -> 3 (node 2), node 2 -> 2 (node 5), node 5 -> 6.
  const AcceptedPath& b = GreedyOrDie(acceptor, kSmallTokens, ArgmaxRows({3, 0, 2, 0, 0, 6, 0}));
  EXPECT_THAT(b.nodes, ElementsAre(0, 2, 5));
  EXPECT_THAT(b.tokens, ElementsAre(3, 2, 6));

  // The whole deepest path: root -> 7 -> 2 -> 1, then 5.
  const AcceptedPath& c = GreedyOrDie(acceptor, kSmallTokens, ArgmaxRows({7, 2, 0, 1, 0, 0, 5}));
  EXPECT_THAT(c.nodes, ElementsAre(0, 1, 3, 6));
  EXPECT_THAT(c.tokens, ElementsAre(7, 2, 1, 5));
  EXPECT_EQ(c.accepted(), 3);

  // Nothing accepted: the step still yields the bonus token from the root's row.
  const AcceptedPath& d = GreedyOrDie(acceptor, kSmallTokens, ArgmaxRows({0, 7, 3, 2, 4, 2, 1}));
  EXPECT_THAT(d.nodes, ElementsAre(0));
  EXPECT_THAT(d.tokens, ElementsAre(0));
  EXPECT_EQ(d.accepted(), 0);
}

TEST(GreedyAcceptanceTest, ArgmaxTiesGoToTheFirstIndex) {
  MedusaTree chain = MedusaTree::Chain(1);
  Acceptor acceptor(chain, 4);
  // Tokens 1 and 3 tie at the root: argmax is 1, so node 1 with token 3 is rejected.
  const std::vector<float> logits = {0, 2, 0, 2, /*node 1*/ 5, 0, 0, 0};
  EXPECT_EQ(GreedyOrDie(acceptor, std::vector<int32_t>{0, 3}, logits).accepted(), 0);
  EXPECT_EQ(GreedyOrDie(acceptor, std::vector<int32_t>{0, 1}, logits).accepted(), 1);
  EXPECT_THAT(GreedyOrDie(acceptor, std::vector<int32_t>{0, 1}, logits).tokens, ElementsAre(1, 0));
}

TEST(AcceptanceTest, SizeAndTokenErrors) {
  MedusaTree tree = SmallTree();
  Acceptor acceptor(tree, kVocab);
  Sampler sampler(SamplingParams{.temperature = 1.0f});
  std::vector<float> logits(7 * kVocab);
  EXPECT_EQ(acceptor.AcceptGreedy(kSmallTokens, absl::MakeSpan(logits).subspan(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(acceptor.AcceptTypical(std::vector<int32_t>{1, 2}, logits, sampler)
                              .status()
                              .message()),
              HasSubstr("7 nodes"));
  std::vector<int32_t> bad = kSmallTokens;
  bad[3] = kVocab;
  EXPECT_THAT(std::string(acceptor.AcceptGreedy(bad, logits).status().message()),
              HasSubstr("node 3 has token 10"));
}

// ------------------------------------------------------------------ typical criterion

// Logits whose softmax at temperature t is `probs` (log p * t).
std::vector<float> LogitsFor(const std::vector<double>& probs, double t = 1.0) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p) * t));
  return out;
}

double Entropy(const std::vector<double>& probs) {
  double h = 0;
  for (double p : probs) h -= p * std::log(p);
  return h;
}

TEST(TypicalCriterionTest, StatsMatchTheDefinition) {
  const std::vector<double> probs = {0.5, 0.25, 0.125, 0.0625, 0.0625};
  for (double t : {1.0, 0.7, 2.0}) {
    TypicalRowStats s = ComputeTypicalRowStats(LogitsFor(probs, t), t, {});
    EXPECT_NEAR(s.entropy, Entropy(probs), 1e-6) << t;
    for (size_t i = 0; i < probs.size(); ++i) {
      EXPECT_NEAR(std::exp(TypicalLogProb(s, LogitsFor(probs, t)[i], t)), probs[i], 1e-6);
    }
    EXPECT_NEAR(s.threshold, std::min(0.09, 0.3 * std::exp(-Entropy(probs))), 1e-7);
  }
}

// One-node chain: is the child's token accepted under the root's row?
bool TypicalAccepts(const std::vector<float>& root_row, int32_t token, double temperature,
                    AcceptanceOptions options = {}) {
  MedusaTree chain = MedusaTree::Chain(1);
  const int vocab = static_cast<int>(root_row.size());
  Acceptor acceptor(chain, vocab, options);
  std::vector<float> logits = root_row;
  logits.resize(2 * vocab, 0.0f);
  Sampler sampler(SamplingParams{.temperature = static_cast<float>(temperature), .seed = 1});
  absl::StatusOr<const AcceptedPath*> path =
      acceptor.AcceptTypical(std::vector<int32_t>{0, token}, logits, sampler);
  EXPECT_TRUE(path.ok()) << path.status();
  return path.ok() && (*path)->accepted() == 1;
}

TEST(TypicalCriterionTest, EpsilonBindsOnLowEntropyRows) {
  // H = 0.357, so delta * exp(-H) = 0.21 > epsilon: the threshold is epsilon = 0.09.
  EXPECT_TRUE(TypicalAccepts(LogitsFor({0.9, 0.0901, 0.0099}), 1, 1.0));
  EXPECT_FALSE(TypicalAccepts(LogitsFor({0.9, 0.0899, 0.0101}), 1, 1.0));
  EXPECT_TRUE(TypicalAccepts(LogitsFor({0.9, 0.0899, 0.0101}), 0, 1.0));
  // Same distributions reached at temperature 0.5.
  EXPECT_TRUE(TypicalAccepts(LogitsFor({0.9, 0.0901, 0.0099}, 0.5), 1, 0.5));
  EXPECT_FALSE(TypicalAccepts(LogitsFor({0.9, 0.0899, 0.0101}, 0.5), 1, 0.5));
  TypicalRowStats s = ComputeTypicalRowStats(LogitsFor({0.9, 0.0901, 0.0099}), 1.0, {});
  EXPECT_EQ(s.threshold, static_cast<double>(0.09f));
}

TEST(TypicalCriterionTest, EntropyBindsOnHighEntropyRows) {
  // Uniform over 100 tokens: p = 0.01 < epsilon, but delta * exp(-H) = 0.3 / 100 = 0.003.
  std::vector<double> uniform(100, 0.01);
  EXPECT_TRUE(TypicalAccepts(LogitsFor(uniform), 42, 1.0));
  TypicalRowStats s = ComputeTypicalRowStats(LogitsFor(uniform), 1.0, {});
  EXPECT_NEAR(s.threshold, 0.003, 1e-9);
  // A token at p = 0.002 in an otherwise flat row: below 0.3 * exp(-H) (about 0.003).
  std::vector<double> flat(100, (1.0 - 0.002) / 99);
  flat[7] = 0.002;
  EXPECT_FALSE(TypicalAccepts(LogitsFor(flat), 7, 1.0));
  EXPECT_TRUE(TypicalAccepts(LogitsFor(flat), 8, 1.0));
}

TEST(TypicalCriterionTest, ExactBoundaryIsRejected) {
  // Uniform row, epsilon = delta = 1: the threshold is exp(-H) = 1/4, which is exactly
  // p; the rule is strict (p > threshold), so nothing passes. A hair less delta passes.
  const std::vector<float> uniform(4, 0.0f);
  TypicalRowStats s = ComputeTypicalRowStats(uniform, 1.0, {1.0f, 1.0f});
  EXPECT_EQ(std::exp(TypicalLogProb(s, 0.0f, 1.0)), s.threshold);
  EXPECT_FALSE(TypicalAccepts(uniform, 2, 1.0, {1.0f, 1.0f}));
  EXPECT_TRUE(TypicalAccepts(uniform, 2, 1.0, {1.0f, 0.999f}));
  // Epsilon exactly at p = 1/4 (representable): strict again.
  EXPECT_FALSE(TypicalAccepts(uniform, 2, 1.0, {0.25f, 5.0f}));
  EXPECT_TRUE(TypicalAccepts(uniform, 2, 1.0, {0.2499f, 5.0f}));
}

TEST(TypicalCriterionTest, DegenerateRows) {
  const float inf = std::numeric_limits<float>::infinity();
  // -inf logits have p = 0 and do not poison the entropy.
  TypicalRowStats s = ComputeTypicalRowStats(std::vector<float>{0.0f, -inf, 0.0f}, 1.0, {});
  EXPECT_NEAR(s.entropy, std::log(2.0), 1e-12);
  EXPECT_FALSE(TypicalAccepts({0.0f, -inf, 0.0f}, 1, 1.0));
  EXPECT_TRUE(TypicalAccepts({0.0f, -inf, 0.0f}, 2, 1.0));
  // A row with nothing finite accepts nothing.
  EXPECT_FALSE(TypicalAccepts({-inf, -inf}, 0, 1.0));
}

// Two accepted siblings whose subtrees reach the same depth: the more likely path wins
// even though it comes later in tree order.
TEST(TypicalAcceptanceTest, TiesGoToTheMostLikelyPath) {
  // Nodes: 0 root, 1 [0], 2 [1], 3 [0,0], 4 [1,0].
  absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths({{0}, {1}, {0, 0}, {1, 0}}, 2);
  ASSERT_TRUE(tree.ok());
  const int vocab = 5;
  const std::vector<int32_t> tokens = {0, 1, 2, 3, 3};
  std::vector<float> logits;
  auto add = [&](const std::vector<double>& p) {
    std::vector<float> row = LogitsFor(p);
    logits.insert(logits.end(), row.begin(), row.end());
  };
  add({0.0001, 0.5999, 0.3999, 0.0001, 0.0001});  // root: tokens 1 and 2 both pass
  add({0.2, 0.1, 0.1, 0.5, 0.1});                  // after node 1: token 3 at 0.5
  add({0.025, 0.025, 0.025, 0.9, 0.025});          // after node 2: token 3 at 0.9
  add({0.2, 0.2, 0.2, 0.2, 0.2});
  add({0.96, 0.01, 0.01, 0.01, 0.01});             // after node 4: bonus token 0 likely
  Acceptor acceptor(*tree, vocab);
  Sampler sampler(SamplingParams{.temperature = 1.0f, .seed = 3});
  absl::StatusOr<const AcceptedPath*> path = acceptor.AcceptTypical(tokens, logits, sampler);
  ASSERT_TRUE(path.ok());
  // log(0.6 * 0.5) = log 0.30 < log(0.4 * 0.9) = log 0.36: node 4 wins.
  EXPECT_THAT((*path)->nodes, ElementsAre(0, 2, 4));
  EXPECT_EQ((*path)->tokens.size(), 3u);
  EXPECT_EQ((*path)->tokens[0], 2);
  EXPECT_EQ((*path)->tokens[1], 3);
  // The bonus is the sampler's draw from node 4's row.
  Sampler same(SamplingParams{.temperature = 1.0f, .seed = 3});
  EXPECT_EQ((*path)->bonus_token(), same.Sample(absl::MakeSpan(logits).subspan(4 * vocab, vocab)));
}

TEST(TypicalAcceptanceTest, GreedyParamsUseGreedyAcceptance) {
  MedusaTree tree = SmallTree();
  Acceptor acceptor(tree, kVocab);
  Sampler greedy(SamplingParams{});
  const std::vector<float> logits = ArgmaxRows({7, 4, 0, 1, 8, 0, 0});
  absl::StatusOr<const AcceptedPath*> a = acceptor.Accept(kSmallTokens, logits, greedy);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT((*a)->tokens, ElementsAre(7, 4, 8));
  absl::StatusOr<const AcceptedPath*> b = acceptor.AcceptTypical(kSmallTokens, logits, greedy);
  ASSERT_TRUE(b.ok());
  EXPECT_THAT((*b)->tokens, ElementsAre(7, 4, 8));
}

// ------------------------------------------------------------------ property tests

// A random prefix-closed tree: repeatedly extend a random node by a random rank.
MedusaTree RandomTree(std::mt19937& rng, int max_depth, int max_rank, int grow_steps) {
  std::set<std::vector<int>> paths;
  std::vector<std::vector<int>> nodes = {{}};
  for (int i = 0; i < grow_steps; ++i) {
    std::vector<int> p = nodes[rng() % nodes.size()];
    if (static_cast<int>(p.size()) >= max_depth) continue;
    p.push_back(static_cast<int>(rng() % (max_rank + 1)));
    if (paths.insert(p).second) nodes.push_back(p);
  }
  return *MedusaTree::FromPaths({paths.begin(), paths.end()}, max_depth);
}

struct Step {
  std::vector<int32_t> tokens;
  std::vector<float> logits;
};

// Candidates from random head logits, and verification rows that often agree with one
// of the children (so long accepted paths are common).
Step RandomStep(std::mt19937& rng, const MedusaTree& tree, int vocab, float scale) {
  Step step;
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> head_logits(static_cast<size_t>(tree.num_heads_used()) * vocab);
  for (float& x : head_logits) x = normal(rng);
  CandidateBuilder builder = *CandidateBuilder::Create(tree, vocab);
  EXPECT_TRUE(builder.Build(static_cast<int32_t>(rng() % vocab), head_logits).ok());
  step.tokens.assign(builder.node_tokens().begin(), builder.node_tokens().end());
  step.logits.resize(static_cast<size_t>(tree.num_nodes()) * vocab);
  for (float& x : step.logits) x = normal(rng);
  for (int n = 0; n < tree.num_nodes(); ++n) {
    absl::Span<const int> kids = tree.children(n);
    if (kids.empty() || rng() % 10 >= 7) continue;
    float* row = step.logits.data() + static_cast<size_t>(n) * vocab;
    const float top = *std::max_element(row, row + vocab);
    row[step.tokens[kids[rng() % kids.size()]]] = top + 0.5f * scale;
  }
  return step;
}

// The rules written out directly, in double, node by node from the root.
struct Reference {
  std::vector<int> nodes;
  double likelihood = 0;
};

bool ReferencePasses(absl::Span<const float> row, int32_t token, double temperature,
                     const AcceptanceOptions& options, double* log_p) {
  if (temperature <= 0) {
    return token == std::max_element(row.begin(), row.end()) - row.begin();
  }
  std::vector<double> p(row.size());
  const double m = *std::max_element(row.begin(), row.end());
  double z = 0;
  for (size_t i = 0; i < row.size(); ++i) z += p[i] = std::exp((row[i] - m) / temperature);
  double h = 0;
  for (double& x : p) {
    x /= z;
    if (x > 0) h -= x * std::log(x);
  }
  *log_p = std::log(p[token]);
  return p[token] > std::min<double>(options.epsilon, options.delta * std::exp(-h));
}

Reference ReferenceAccept(const MedusaTree& tree, const Step& step, int vocab, double temperature,
                          const AcceptanceOptions& options) {
  Reference best{{0}, 0.0};
  for (int n = 1; n < tree.num_nodes(); ++n) {
    absl::Span<const int> chain = tree.ancestors(n);
    bool ok = true;
    double likelihood = 0;
    for (size_t j = 1; j < chain.size() && ok; ++j) {
      double log_p = 0;
      ok = ReferencePasses(absl::MakeConstSpan(step.logits).subspan(chain[j - 1] * vocab, vocab),
                           step.tokens[chain[j]], temperature, options, &log_p);
      likelihood += log_p;
    }
    if (!ok) continue;
    const int depth = tree.depth(n), best_depth = static_cast<int>(best.nodes.size()) - 1;
    const bool better = depth > best_depth ||
                        (depth == best_depth && temperature > 0 && likelihood > best.likelihood);
    if (better) best = {std::vector<int>(chain.begin(), chain.end()), likelihood};
  }
  return best;
}

TEST(AcceptancePropertyTest, GreedyMatchesTheDirectRule) {
  std::mt19937 rng(101);
  for (int trial = 0; trial < 300; ++trial) {
    MedusaTree tree = RandomTree(rng, 1 + rng() % 5, 4, 5 + rng() % 40);
    const int vocab = 8 + rng() % 40;
    Step step = RandomStep(rng, tree, vocab, 2.0f);
    Acceptor acceptor(tree, vocab);
    const AcceptedPath& got = GreedyOrDie(acceptor, step.tokens, step.logits);
    Reference want = ReferenceAccept(tree, step, vocab, 0.0, {});
    ASSERT_EQ(got.nodes, want.nodes) << "trial " << trial;
    // What plain greedy decoding would emit: each token the argmax after the previous one.
    ASSERT_EQ(got.tokens.size(), got.nodes.size());
    for (size_t j = 0; j < got.tokens.size(); ++j) {
      absl::Span<const float> row =
          absl::MakeConstSpan(step.logits).subspan(got.nodes[j] * vocab, vocab);
      ASSERT_EQ(got.tokens[j], Argmax(row)) << "trial " << trial << " token " << j;
    }
  }
}

// Accepting from each node's greedy token alone (a backend's argmax rows) decides exactly as
// accepting from the logits; wrong sizes and tokens outside the vocabulary are refused.
TEST(AcceptancePropertyTest, GreedyFromArgmaxIdsEqualsGreedyFromLogits) {
  std::mt19937 rng(202);
  for (int trial = 0; trial < 200; ++trial) {
    MedusaTree tree = RandomTree(rng, 1 + rng() % 5, 4, 5 + rng() % 40);
    const int vocab = 8 + rng() % 40;
    Step step = RandomStep(rng, tree, vocab, 2.0f);
    std::vector<int32_t> argmax(tree.num_nodes());
    for (int n = 0; n < tree.num_nodes(); ++n) {
      argmax[n] = Argmax(absl::MakeConstSpan(step.logits).subspan(n * vocab, vocab));
    }
    Acceptor from_logits(tree, vocab), from_ids(tree, vocab);
    const AcceptedPath want = GreedyOrDie(from_logits, step.tokens, step.logits);
    absl::StatusOr<const AcceptedPath*> got = from_ids.AcceptGreedy(step.tokens, argmax);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ((*got)->nodes, want.nodes) << "trial " << trial;
    ASSERT_EQ((*got)->tokens, want.tokens) << "trial " << trial;
  }
  const MedusaTree chain = MedusaTree::Chain(2);
  Acceptor acceptor(chain, 10);
  EXPECT_EQ(acceptor.AcceptGreedy(std::vector<int32_t>{1, 2, 3}, std::vector<int32_t>{1, 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acceptor.AcceptGreedy(std::vector<int32_t>{1, 2, 3}, std::vector<int32_t>{1, 2, 10}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AcceptancePropertyTest, TypicalMatchesTheDirectRule) {
  std::mt19937 rng(202);
  int multi_accepted_trials = 0;
  for (int trial = 0; trial < 300; ++trial) {
    MedusaTree tree = RandomTree(rng, 1 + rng() % 5, 4, 5 + rng() % 40);
    const int vocab = 6 + rng() % 20;
    const double temperature = std::vector<double>{0.3, 0.7, 1.0, 1.5}[rng() % 4];
    // Flat-ish rows (scale 1) accept several siblings: ties by likelihood get exercised.
    Step step = RandomStep(rng, tree, vocab, 1.0f);
    AcceptanceOptions options;
    Acceptor acceptor(tree, vocab, options);
    const uint64_t seed = rng();
    Sampler sampler(SamplingParams{.temperature = static_cast<float>(temperature), .seed = seed});
    absl::StatusOr<const AcceptedPath*> got = acceptor.AcceptTypical(step.tokens, step.logits, sampler);
    ASSERT_TRUE(got.ok());
    Reference want = ReferenceAccept(tree, step, vocab, temperature, options);
    ASSERT_EQ((*got)->nodes, want.nodes) << "trial " << trial;
    for (int j = 1; j < static_cast<int>(want.nodes.size()); ++j) {
      ASSERT_EQ((*got)->tokens[j - 1], step.tokens[want.nodes[j]]);
    }
    // One draw from the request's sampler, on the last accepted node's row.
    Sampler same(SamplingParams{.temperature = static_cast<float>(temperature), .seed = seed});
    ASSERT_EQ((*got)->bonus_token(),
              same.Sample(absl::MakeConstSpan(step.logits).subspan(want.nodes.back() * vocab, vocab)));
    multi_accepted_trials += (*got)->accepted() >= 2;
  }
  EXPECT_GT(multi_accepted_trials, 30);  // the test exercised long paths
}

TEST(AcceptancePropertyTest, TypicalTendsToGreedyAsTemperatureVanishes) {
  std::mt19937 rng(303);
  int long_paths = 0;
  for (int trial = 0; trial < 300; ++trial) {
    MedusaTree tree = trial % 3 == 0 ? *LoadTree("default", 4) : RandomTree(rng, 4, 5, 40);
    const int vocab = 12 + rng() % 50;
    Step step = RandomStep(rng, tree, vocab, 3.0f);
    Acceptor acceptor(tree, vocab);
    Sampler cold(SamplingParams{.temperature = 1e-5f, .seed = 9});
    absl::StatusOr<const AcceptedPath*> typical = acceptor.AcceptTypical(step.tokens, step.logits, cold);
    ASSERT_TRUE(typical.ok());
    const AcceptedPath typical_copy = **typical;
    const AcceptedPath& greedy = GreedyOrDie(acceptor, step.tokens, step.logits);
    ASSERT_EQ(typical_copy.nodes, greedy.nodes) << "trial " << trial;
    ASSERT_EQ(typical_copy.tokens, greedy.tokens) << "trial " << trial;
    long_paths += greedy.accepted() >= 2;
  }
  EXPECT_GT(long_paths, 30);
}

// Typical acceptance from a backend's row statistics and single logits (what a GPU copies back)
// chooses the same path and draws the same bonus token as from the rows, reading one row.
TEST(AcceptancePropertyTest, TypicalFromRowStatisticsEqualsTypicalFromRows) {
  std::mt19937 rng(404);
  int long_paths = 0;
  for (int trial = 0; trial < 300; ++trial) {
    MedusaTree tree = RandomTree(rng, 1 + rng() % 5, 4, 5 + rng() % 40);
    const int vocab = 6 + rng() % 30;
    const float temperature = std::vector<float>{0.3f, 0.7f, 1.0f, 1.5f}[rng() % 4];
    Step step = RandomStep(rng, tree, vocab, 1.0f);
    const uint64_t seed = rng();
    auto row = [&](int n) { return absl::MakeConstSpan(step.logits).subspan(static_cast<size_t>(n) * vocab, vocab); };
    std::vector<kernels::SoftmaxStats> stats;
    std::vector<float> child_logits(tree.num_nodes(), 0.0f);
    for (int n = 0; n < tree.num_nodes(); ++n) {
      stats.push_back(kernels::TemperedSoftmaxStats(row(n), temperature));
      if (n > 0) child_logits[n] = row(tree.parent(n))[step.tokens[n]];
    }
    Acceptor from_rows(tree, vocab), from_stats(tree, vocab);
    Sampler a(SamplingParams{.temperature = temperature, .seed = seed});
    Sampler b(SamplingParams{.temperature = temperature, .seed = seed});
    absl::StatusOr<const AcceptedPath*> want = from_rows.AcceptTypical(step.tokens, step.logits, a);
    ASSERT_TRUE(want.ok()) << want.status();
    int reads = 0, read_node = -1;
    absl::StatusOr<const AcceptedPath*> got = from_stats.AcceptTypical(
        step.tokens, stats, child_logits,
        [&](int node) -> absl::StatusOr<absl::Span<const float>> {
          ++reads;
          read_node = node;
          return row(node);
        },
        b);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ((*got)->nodes, (*want)->nodes) << "trial " << trial;
    ASSERT_EQ((*got)->tokens, (*want)->tokens) << "trial " << trial;
    EXPECT_EQ(reads, 1);
    EXPECT_EQ(read_node, (*got)->last_node());
    long_paths += (*got)->accepted() >= 2;
  }
  EXPECT_GT(long_paths, 30);

  // Wrong sizes, greedy params and a failed row read are errors, not guesses.
  const MedusaTree chain = MedusaTree::Chain(2);
  Acceptor acceptor(chain, 10);
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<kernels::SoftmaxStats> three(3), two(2);
  const std::vector<float> logits3(3, 0.0f), row(10, 0.0f);
  auto reader = [&](int) -> absl::StatusOr<absl::Span<const float>> { return absl::MakeConstSpan(row); };
  Sampler sampling(SamplingParams{.temperature = 1.0f, .seed = 1});
  Sampler greedy(SamplingParams{});
  EXPECT_EQ(acceptor.AcceptTypical(tokens, two, logits3, reader, sampling).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acceptor.AcceptTypical(tokens, three, logits3, reader, greedy).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto failing = [](int) -> absl::StatusOr<absl::Span<const float>> { return absl::UnavailableError("gone"); };
  EXPECT_EQ(acceptor.AcceptTypical(tokens, three, logits3, failing, sampling).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace medusa
