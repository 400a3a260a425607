// Calibrated Medusa trees: calibration parsing and its errors, greedy trees checked by
// hand, properties over many sizes (monotone expected acceleration, prefix-closed
// paths, growth by prefixes), the auto-tree file and its per-batch-size lookup, the
// tree choice, and tree-step timing on stories260K (every KV block returned).

#include <algorithm>
#include <map>
#include <set>

#include "engine/engine.h"
#include "engine/medusa/auto_tree_file.h"
#include "engine/medusa/tree_builder.h"
#include "engine/medusa/tree_timing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/random_heads.h"
#include "tests/support/test_models.h"
#include "tests/unit/model_test_util.h"

namespace medusa {
namespace {

using ::medusa::testing_util::WriteTemp;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using Paths = std::vector<std::vector<int>>;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// Cumulative top-1..top-10 accuracies from per-rank ones.
std::vector<double> Cumulative(const std::vector<double>& per_rank) {
  std::vector<double> top;
  double sum = 0;
  for (double a : per_rank) top.push_back(sum += a);
  return top;
}

Calibration MakeCalibration(std::vector<std::vector<double>> per_rank_by_head) {
  Calibration c;
  for (const auto& per_rank : per_rank_by_head) c.topk_accuracy.push_back(Cumulative(per_rank));
  return c;
}

// Two heads whose greedy order is easy to follow by hand (per-rank accuracies; products
// with no near-ties among the first eight nodes).
//   head 0: 0.6 0.2 0.1 0.05 ...        head 1: 0.4 0.2 0.1 0.05 ...
Calibration TwoHeads() {
  return MakeCalibration({{0.6, 0.2, 0.1, 0.05, 0.02, 0.01, 0.004, 0.003, 0.002, 0.001},
                          {0.4, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01, 0.005, 0.005}});
}

// A realistic four-head calibration: accuracy falls with the head's distance.
Calibration FourHeads() {
  absl::StatusOr<Calibration> c = ParseCalibration(R"({"heads": "h.safetensors", "topk_accuracy": [
      [0.6, 0.7, 0.75, 0.78, 0.8, 0.82, 0.83, 0.84, 0.85, 0.86],
      [0.4, 0.5, 0.56, 0.6, 0.63, 0.65, 0.67, 0.68, 0.69, 0.7],
      [0.3, 0.4, 0.45, 0.48, 0.5, 0.52, 0.53, 0.54, 0.55, 0.56],
      [0.2, 0.3, 0.34, 0.37, 0.4, 0.42, 0.43, 0.44, 0.45, 0.46]]})",
                                                   "four");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : Calibration{};
}

// ------------------------------------------------------------------ calibration

TEST(CalibrationTest, ParsesHeadsAndPerRankAccuracies) {
  absl::StatusOr<Calibration> c = ParseCalibration(
      R"({"heads": "medusa.safetensors", "topk_accuracy": [[0.5, 0.7, 0.7, 1.0], [0.25, 0.5]], "steps": 10})",
      "cal.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->heads, "medusa.safetensors");
  ASSERT_EQ(c->num_heads(), 2);
  EXPECT_EQ(c->num_ranks(0), 4);
  EXPECT_EQ(c->num_ranks(1), 2);
  EXPECT_DOUBLE_EQ(c->rank_accuracy(0, 0), 0.5);
  EXPECT_NEAR(c->rank_accuracy(0, 1), 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(c->rank_accuracy(0, 2), 0.0);
  EXPECT_NEAR(c->rank_accuracy(0, 3), 0.3, 1e-12);
  EXPECT_DOUBLE_EQ(c->rank_accuracy(1, 1), 0.25);
  EXPECT_DOUBLE_EQ(c->rank_accuracy(1, 2), 0.0) << "ranks past the measured ones never hit";
}

TEST(CalibrationTest, HeadsMemberIsOptional) {
  absl::StatusOr<Calibration> c = ParseCalibration(R"({"topk_accuracy": [[0.1]]})", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->heads, "");
  EXPECT_TRUE(c->temperature.empty());
}

TEST(CalibrationTest, ReadsTheHeadsTemperatures) {
  absl::StatusOr<Calibration> c =
      ParseCalibration(R"({"topk_accuracy": [[0.5], [0.25]], "temperature": [1.5, 0.75]})", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->temperature, ElementsAre(1.5, 0.75));
}

TEST(CalibrationTest, BadInputNamesTheProblem) {
  struct Case {
    std::string json, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"{not json", "not valid JSON"},
           {"[[0.5, 0.6]]", "expected a JSON object"},
           {R"({"heads": "h"})", "missing \"topk_accuracy\""},
           {R"({"topk_accuracy": []})", "non-empty list with one list per head"},
           {R"({"topk_accuracy": [0.5, 0.6]})", "topk_accuracy[0] must be a non-empty list"},
           {R"({"topk_accuracy": [[0.5], []]})", "topk_accuracy[1] must be a non-empty list"},
           {R"({"topk_accuracy": [[[0.5]]]})", "topk_accuracy[0][0] is [0.5], not a number"},
           {R"({"topk_accuracy": [[0.5, "0.6"]]})", "topk_accuracy[0][1] is \"0.6\", not a number"},
           {R"({"topk_accuracy": [[0.5, 1.5]]})", "topk_accuracy[0][1] = 1.5 is outside [0, 1]"},
           {R"({"topk_accuracy": [[-0.1]]})", "topk_accuracy[0][0] = -0.1 is outside [0, 1]"},
           {R"({"topk_accuracy": [[0.5, 0.6], [0.4, 0.3]]})", "topk_accuracy[1] decreases: top-2 = 0.3 < top-1 = 0.4"},
           {R"({"heads": 3, "topk_accuracy": [[0.5]]})", "\"heads\" must be a string"},
           {R"({"topk_accuracy": [[0.5], [0.4]], "temperature": [1.0]})", "\"temperature\" must be a list of 2"},
           {R"({"topk_accuracy": [[0.5]], "temperature": 1.0})", "\"temperature\" must be a list of 1"},
           {R"({"topk_accuracy": [[0.5]], "temperature": [0]})", "temperature[0] is 0, not a positive number"},
           {R"({"topk_accuracy": [[0.5]], "temperature": ["2"]})", "temperature[0] is \"2\", not a positive"},
       }) {
    absl::StatusOr<Calibration> parsed = ParseCalibration(c.json, "cal.json");
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(Message(parsed.status()), HasSubstr("calibration 'cal.json'")) << c.json;
    EXPECT_THAT(Message(parsed.status()), HasSubstr(c.expect)) << c.json;
  }
}

TEST(CalibrationTest, ToleratesRoundingWobbleInCumulativeValues) {
  absl::StatusOr<Calibration> c = ParseCalibration(R"({"topk_accuracy": [[0.3, 0.29999999999999]]})", "x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->rank_accuracy(0, 1), 0.0);
}

TEST(CalibrationTest, LoadsFilesAndNamesMissingOnes) {
  absl::StatusOr<Calibration> c = LoadCalibration(WriteTemp("cal.json", R"({"topk_accuracy": [[0.5, 0.8]]})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_heads(), 1);
  absl::StatusOr<Calibration> missing = LoadCalibration("/nonexistent/cal.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), HasSubstr("/nonexistent/cal.json"));
}

// ------------------------------------------------------------------ greedy trees

// By hand, with head 0 = (0.6, 0.2, 0.1, 0.05, ...) and head 1 = (0.4, 0.2, 0.1, 0.05, ...):
//   [0] .6   [0,0] .24   [1] .2   [0,1] .12   [2] .1   [1,0] .08   [0,2] .06   [3] .05
// then [1,1] .04 ([0,3] .03, [4] .02 and [1,2] .02 come later).
TEST(GreedyTreeTest, TwoHeadsByHand) {
  absl::StatusOr<GreedyTree> tree = BuildGreedyTree(TwoHeads(), 9);
  ASSERT_TRUE(tree.ok()) << tree.status();
  EXPECT_EQ(tree->paths, (Paths{{0}, {0, 0}, {1}, {0, 1}, {2}, {1, 0}, {0, 2}, {3}, {1, 1}}));
  const std::vector<double> expected = {0.6, 0.24, 0.2, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04};
  ASSERT_EQ(tree->probabilities.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(tree->probabilities[i], expected[i], 1e-12) << i;
  EXPECT_NEAR(tree->expected_acceleration(7), 2.4, 1e-12);
  EXPECT_NEAR(tree->expected_acceleration(), 2.49, 1e-12);
  EXPECT_DOUBLE_EQ(tree->expected_acceleration(0), 1.0);
  EXPECT_EQ(tree->Prefix(3).paths, (Paths{{0}, {0, 0}, {1}}));
  EXPECT_EQ(tree->Prefix(-1).nodes(), 0);
  EXPECT_EQ(tree->Prefix(100).nodes(), 9);
}

TEST(GreedyTreeTest, JsonIsInTreeOrderAndReadsBackAsATree) {
  absl::StatusOr<GreedyTree> tree = BuildGreedyTree(TwoHeads(), 6);
  ASSERT_TRUE(tree.ok()) << tree.status();
  const nlohmann::json j = tree->ToJson();
  EXPECT_EQ(j["nodes"], 6);
  EXPECT_NEAR(j["expected_acceleration"].get<double>(), 1 + 0.6 + 0.24 + 0.2 + 0.12 + 0.1 + 0.08, 1e-12);
  EXPECT_EQ(j["paths"].get<Paths>(), (Paths{{0}, {1}, {2}, {0, 0}, {0, 1}, {1, 0}}));
  const std::vector<double> probabilities = j["probabilities"].get<std::vector<double>>();
  EXPECT_NEAR(probabilities[2], 0.1, 1e-12) << "probabilities follow the sorted paths";
  EXPECT_NEAR(probabilities[3], 0.24, 1e-12);

  absl::StatusOr<MedusaTree> loaded = LoadTree(WriteTemp("greedy.json", j.dump()), 2);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->num_nodes(), 7);
  EXPECT_EQ(loaded->paths(), j["paths"].get<Paths>());
}

// Every rank equally likely (0.1 each): all ten depth-1 nodes (0.1) come before any
// depth-2 node (0.01), which then fill in tree order.
TEST(GreedyTreeTest, UniformAccuracyFillsLevelsInTreeOrder) {
  const Calibration uniform = MakeCalibration({std::vector<double>(10, 0.1), std::vector<double>(10, 0.1)});
  absl::StatusOr<GreedyTree> ten = BuildGreedyTree(uniform, 10);
  ASSERT_TRUE(ten.ok()) << ten.status();
  EXPECT_EQ(ten->paths, (Paths{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}}));
  EXPECT_NEAR(ten->expected_acceleration(), 2.0, 1e-9);
  absl::StatusOr<GreedyTree> fifteen = BuildGreedyTree(uniform, 15);
  ASSERT_TRUE(fifteen.ok());
  EXPECT_EQ(Paths(fifteen->paths.begin() + 10, fifteen->paths.end()),
            (Paths{{0, 0}, {0, 1}, {0, 2}, {0, 3}, {0, 4}}));
  EXPECT_NEAR(fifteen->expected_acceleration(), 2.05, 1e-9);
}

// The same halving accuracies at every head: [1] (.25) ties [0,0] (.25) and wins as
// the shallower node; then the .125 nodes come in tree order.
TEST(GreedyTreeTest, TiesGoToTheShallowerThenSmallerPath) {
  const std::vector<double> halving = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
                                       0.001953125, 0.0009765625};
  absl::StatusOr<GreedyTree> tree = BuildGreedyTree(MakeCalibration({halving, halving, halving}), 7);
  ASSERT_TRUE(tree.ok()) << tree.status();
  EXPECT_EQ(tree->paths, (Paths{{0}, {1}, {0, 0}, {2}, {0, 1}, {1, 0}, {0, 0, 0}}));
}

TEST(GreedyTreeTest, GrowsByPrefixesWithMonotoneAccelerationAndClosedPaths) {
  const Calibration c = FourHeads();
  absl::StatusOr<GreedyTree> big = BuildGreedyTree(c, 300);
  ASSERT_TRUE(big.ok()) << big.status();
  std::set<std::vector<int>> seen;
  for (int n = 0; n < big->nodes(); ++n) {
    const std::vector<int>& p = big->paths[n];
    EXPECT_TRUE(seen.insert(p).second) << "duplicate path at " << n;
    EXPECT_LE(p.size(), 4u);
    for (int r : p) EXPECT_LT(r, kGreedyMaxRank);
    if (p.size() > 1) {
      EXPECT_TRUE(seen.contains(std::vector<int>(p.begin(), p.end() - 1))) << "path " << n << " before its parent";
    }
    EXPECT_GE(big->expected_acceleration(n + 1), big->expected_acceleration(n)) << n;
  }
  EXPECT_GT(big->expected_acceleration(300), big->expected_acceleration(64));
  for (int n : {1, 4, 8, 16, 32, 64, 150}) {
    absl::StatusOr<GreedyTree> small = BuildGreedyTree(c, n);
    ASSERT_TRUE(small.ok()) << n;
    EXPECT_EQ(small->paths, big->Prefix(n).paths) << "the size-" << n << " tree is a prefix of bigger ones";
    EXPECT_TRUE(MedusaTree::FromPaths(small->paths, 4).ok()) << n;
  }
}

TEST(GreedyTreeTest, DepthLimitAndSizeBounds) {
  const Calibration c = FourHeads();
  absl::StatusOr<GreedyTree> shallow = BuildGreedyTree(c, 10, /*max_depth=*/1);
  ASSERT_TRUE(shallow.ok()) << shallow.status();
  for (const auto& p : shallow->paths) EXPECT_EQ(p.size(), 1u);
  EXPECT_EQ(MaxGreedyNodes(c, 1), 10);
  EXPECT_EQ(MaxGreedyNodes(c, 2), 110);
  EXPECT_EQ(MaxGreedyNodes(c), MedusaTree::kMaxPaths + 1) << "capped past the path limit";

  absl::StatusOr<GreedyTree> too_many = BuildGreedyTree(c, 11, 1);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(too_many.status()), HasSubstr("at most 10 nodes"));
  EXPECT_EQ(BuildGreedyTree(c, -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(BuildGreedyTree(c, MedusaTree::kMaxPaths + 1).status()), HasSubstr("at most 2048"));
  absl::StatusOr<GreedyTree> empty = BuildGreedyTree(c, 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->nodes(), 0);

  // A head with three measured ranks offers three candidates per parent.
  const Calibration short_head = MakeCalibration({{0.5, 0.2, 0.1}});
  EXPECT_EQ(MaxGreedyNodes(short_head), 3);
  EXPECT_TRUE(BuildGreedyTree(short_head, 3).ok());
  EXPECT_FALSE(BuildGreedyTree(short_head, 4).ok());
}

// ------------------------------------------------------------------ choice, auto trees

TEST(ChooseTreeTest, PicksTheLargestSpeedupAboveOne) {
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{1.2, 1.5, 1.4}), 1);
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{0.9, 0.99}), -1);
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{1.0}), -1) << "a tie with plain decoding stays plain";
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{1.04, 1.03}), -1) << "within the measurements' error: plain";
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{1.04, 1.05}), 1);
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{1.3, 1.3}), 0) << "ties go to the smaller tree";
  EXPECT_EQ(ChooseTreeIndex(std::vector<double>{}), -1);
}

constexpr char kAutoJson[] = R"({"heads": "h.safetensors", "choice": {
    "1": {"nodes": 3, "paths": [[0], [1], [0, 0]]},
    "4": {"nodes": 1, "paths": [[0]]},
    "16": {"nodes": 0, "paths": []}}})";

TEST(AutoTreeTest, PicksTheNearestMeasuredBatchSizeAtOrAbove) {
  absl::StatusOr<AutoTree> a = AutoTree::Parse(kAutoJson, "auto.json", 4);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->batch_sizes(), ElementsAre(1, 4, 16));
  EXPECT_EQ(a->TreeForBatch(1).num_nodes(), 4);
  EXPECT_EQ(a->TreeForBatch(1).paths(), (Paths{{0}, {1}, {0, 0}}));
  EXPECT_EQ(a->TreeForBatch(2).num_nodes(), 2);
  EXPECT_EQ(a->TreeForBatch(4).num_nodes(), 2);
  EXPECT_EQ(a->TreeForBatch(5).num_nodes(), 1) << "plain decoding from 16";
  EXPECT_EQ(a->TreeForBatch(64).num_nodes(), 1) << "past the largest measured: its choice";
  EXPECT_EQ(a->TreeForBatch(0).num_nodes(), 4);
}

TEST(AutoTreeTest, KeepsTheMeasuredCostsOfTheBatchSizeItReads) {
  absl::StatusOr<AutoTree> a = AutoTree::Parse(R"({"choice": {
      "1": {"nodes": 1, "paths": [[0]]}, "4": {"nodes": 0, "paths": []}},
      "measurements": [
        {"batch_size": 1, "nodes": 0, "overhead": 1.0, "expected_speedup": 1.0, "step_ms": 2.0},
        {"batch_size": 1, "nodes": 1, "overhead": 1.2, "expected_speedup": 1.15},
        {"batch_size": 4, "nodes": 2, "overhead": 2.5, "expected_speedup": 0.6}]})",
                                               "auto.json", 2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->CostsForBatch(1).size(), 2u);
  EXPECT_DOUBLE_EQ(a->CostsForBatch(1).at(1).overhead, 1.2);
  EXPECT_DOUBLE_EQ(a->CostsForBatch(1).at(1).expected_speedup, 1.15);
  EXPECT_DOUBLE_EQ(a->CostsForBatch(3).at(2).overhead, 2.5) << "batch 3 reads batch 4's, as TreeForBatch does";
  EXPECT_TRUE(AutoTree::Parse(kAutoJson, "auto.json", 4)->CostsForBatch(1).empty()) << "a hand-written choice";
}

TEST(AutoTreeTest, BadFilesNameTheProblem) {
  struct Case {
    std::string json, expect;
    int heads = 1;
  };
  for (const Case& c : std::vector<Case>{
           {"nope", "not valid JSON"},
           {R"({"heads": "h"})", "\"choice\" maps batch sizes"},
           {R"({"choice": {}})", "\"choice\" maps batch sizes"},
           {R"({"choice": {"one": {"nodes": 0, "paths": []}}})", "choice key \"one\" is not a batch size"},
           {R"({"choice": {"0": {"nodes": 0, "paths": []}}})", "choice key \"0\""},
           {R"({"choice": {"1": {"paths": []}}})", "choice[\"1\"] must be an object with integer \"nodes\""},
           {R"({"choice": {"1": {"nodes": 2, "paths": [[0]]}}})", "choice[\"1\"] says 2 nodes but lists 1 paths"},
           {R"({"choice": {"2": {"nodes": 1, "paths": [[0, 0]]}}})", "needs its prefix [0]", 2},
           {R"({"choice": {"2": {"nodes": 2, "paths": [[0], [0, 0]]}}})", "only 1 Medusa heads are available"},
           {R"({"choice": {"2": {"nodes": 1, "paths": [["a"]]}}})", "choice[\"2\"]"},
           {R"({"choice": {"1": {"nodes": 0, "paths": []}}, "measurements": {}})", "\"measurements\" must be a list"},
           {R"({"choice": {"1": {"nodes": 0, "paths": []}}, "measurements": [{"batch_size": 1, "nodes": 0}]})",
            "measurements[0] must have"},
           {R"({"choice": {"1": {"nodes": 0, "paths": []}},
               "measurements": [{"batch_size": 1, "nodes": 1, "overhead": -1, "expected_speedup": 1}]})",
            "measurements[0] must have"},
       }) {
    absl::StatusOr<AutoTree> a = AutoTree::Parse(c.json, "auto.json", c.heads);
    ASSERT_FALSE(a.ok()) << c.json;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(Message(a.status()), HasSubstr("auto.json")) << c.json;
    EXPECT_THAT(Message(a.status()), HasSubstr(c.expect)) << c.json;
  }
}

TEST(AutoTreeTest, MissingFileTellsHowToMakeIt) {
  absl::StatusOr<AutoTree> a = AutoTree::Load("/nonexistent/h.auto_tree.json", 4);
  EXPECT_EQ(a.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(a.status()), HasSubstr("/nonexistent/h.auto_tree.json"));
  EXPECT_THAT(Message(a.status()), HasSubstr("medusa tree --auto"));
  absl::StatusOr<AutoTree> ok = AutoTree::Load(WriteTemp("auto_tree.json", kAutoJson), 4);
  EXPECT_TRUE(ok.ok()) << ok.status();
}

// One measurement per machine in one file: each machine takes its own, a hand-written
// entry (no machine) serves any other, and failing both the first is taken.
constexpr char kMachinesJson[] = R"({"machines": [
    {"machine": {"id": "cpu avx2, 2 threads, A"}, "choice": {"1": {"nodes": 1, "paths": [[0]]}}},
    {"machine": {"id": "cpu avx512, 2 threads, B"}, "choice": {"1": {"nodes": 2, "paths": [[0], [1]]}}},
    {"choice": {"1": {"nodes": 0, "paths": []}}}]})";

TEST(AutoTreeTest, TakesThisMachinesMeasurementFromSeveral) {
  struct Case {
    std::string machine, expect_id;
    int expect_nodes;
  };
  for (const Case& c : std::vector<Case>{{"cpu avx2, 2 threads, A", "cpu avx2, 2 threads, A", 2},
                                         {"cpu avx512, 2 threads, B", "cpu avx512, 2 threads, B", 3},
                                         {"cuda H100", "", 1},
                                         {"", "", 1}}) {
    absl::StatusOr<AutoTree> a = AutoTree::Parse(kMachinesJson, "auto.json", 4, c.machine);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(a->machine_id(), c.expect_id) << c.machine;
    EXPECT_EQ(a->TreeForBatch(1).num_nodes(), c.expect_nodes) << c.machine;
  }
  const std::string two = R"({"machines": [
      {"machine": {"id": "A"}, "choice": {"1": {"nodes": 1, "paths": [[0]]}}},
      {"machine": {"id": "B"}, "choice": {"1": {"nodes": 2, "paths": [[0], [1]]}}}]})";
  absl::StatusOr<AutoTree> first = AutoTree::Parse(two, "auto.json", 4, "C");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->machine_id(), "A") << "no match: the first, which the caller sees is not its own";
  absl::StatusOr<AutoTree> loaded = AutoTree::Load(WriteTemp("machines.auto_tree.json", two), 4, "B");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->machine_id(), "B");
}

TEST(AutoTreeTest, BadSeveralMachineFilesNameTheEntry) {
  struct Case {
    std::string json, expect;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"machines": []})", "\"machines\" must be a non-empty list"},
           {R"({"machines": {"id": "A"}})", "\"machines\" must be a non-empty list"},
           {R"({"machines": [{"machine": {"id": "A"}, "choice": {"1": {"nodes": 0, "paths": []}}},
                             {"machine": {"id": "B"}, "choice": {"1": {"nodes": 2, "paths": [[0]]}}}]})",
            "machines[1]: choice[\"1\"] says 2 nodes but lists 1 paths"},
           {R"({"machines": [{"machine": {"id": "B"}}]})", "machines[0]: expected an object whose \"choice\""},
       }) {
    absl::StatusOr<AutoTree> a = AutoTree::Parse(c.json, "auto.json", 4, "B");
    ASSERT_FALSE(a.ok()) << c.json;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(Message(a.status()), HasSubstr("auto.json")) << c.json;
    EXPECT_THAT(Message(a.status()), HasSubstr(c.expect)) << c.json;
  }
}

nlohmann::json Measurement(const std::string& machine, int nodes, double top1) {
  nlohmann::json paths = nlohmann::json::array();
  for (int i = 0; i < nodes; ++i) paths.push_back({i});
  return {{"machine", {{"id", machine}}},
          {"topk_accuracy", {{top1, 0.9}}},
          {"choice", {{"1", {{"nodes", nodes}, {"paths", paths}}}}}};
}

std::vector<std::string> MachineIds(const nlohmann::json& file) {
  std::vector<std::string> ids;
  for (const nlohmann::json& m : file["machines"]) ids.push_back(m["machine"]["id"].get<std::string>());
  return ids;
}

TEST(AutoTreeTest, MergeReplacesThisMachineAndKeepsOthersMeasuredForTheSameHeads) {
  absl::StatusOr<nlohmann::json> first = MergeAutoTreeMeasurement("", Measurement("B", 1, 0.5));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(MachineIds(*first), ElementsAre("B"));

  // A one-machine file (the format before "machines") is read as one entry.
  absl::StatusOr<nlohmann::json> two = MergeAutoTreeMeasurement(Measurement("B", 1, 0.5).dump(),
                                                                Measurement("A", 2, 0.5));
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_THAT(MachineIds(*two), ElementsAre("A", "B")) << "ordered by machine";

  // Measuring B again replaces B's entry only.
  std::vector<std::string> dropped;
  absl::StatusOr<nlohmann::json> again = MergeAutoTreeMeasurement(two->dump(), Measurement("B", 3, 0.5), &dropped);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_THAT(MachineIds(*again), ElementsAre("A", "B"));
  EXPECT_TRUE(dropped.empty());
  EXPECT_EQ((*again)["machines"][1]["choice"]["1"]["nodes"], 3);
  EXPECT_EQ((*again)["machines"][0]["choice"]["1"]["nodes"], 2);
  absl::StatusOr<AutoTree> parsed = AutoTree::Parse(again->dump(), "merged", 4, "B");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->TreeForBatch(1).num_nodes(), 4);

  // Heads with other accuracies (retrained): the other machines' choices are stale.
  absl::StatusOr<nlohmann::json> retrained =
      MergeAutoTreeMeasurement(again->dump(), Measurement("B", 1, 0.7), &dropped);
  ASSERT_TRUE(retrained.ok()) << retrained.status();
  EXPECT_THAT(MachineIds(*retrained), ElementsAre("B"));
  EXPECT_THAT(dropped, ElementsAre("A"));

  // Another weight mode's measurement, made from its own calibration file (other accuracies on
  // purpose), stays when this mode is measured again; one from the same file with other
  // accuracies, or naming no file, is stale.
  nlohmann::json f32 = Measurement("B f32", 2, 0.7);
  f32["calibration"] = "heads/h.calibration.json";
  nlohmann::json q4 = Measurement("B q4_1", 1, 0.6);
  q4["calibration"] = "heads/h.calibration.q4_1.json";
  absl::StatusOr<nlohmann::json> modes = MergeAutoTreeMeasurement(retrained->dump(), f32, &dropped);
  ASSERT_TRUE(modes.ok()) << modes.status();
  dropped.clear();
  modes = MergeAutoTreeMeasurement(modes->dump(), q4, &dropped);
  ASSERT_TRUE(modes.ok()) << modes.status();
  EXPECT_THAT(MachineIds(*modes), ElementsAre("B f32", "B q4_1")) << "B said no calibration file: stale";
  EXPECT_THAT(dropped, ElementsAre("B"));
  nlohmann::json f32_again = Measurement("B f32", 3, 0.8);  // heads retrained: new accuracies, same file
  f32_again["calibration"] = "elsewhere/h.calibration.json";
  dropped.clear();
  modes = MergeAutoTreeMeasurement(modes->dump(), f32_again, &dropped);
  ASSERT_TRUE(modes.ok()) << modes.status();
  EXPECT_THAT(MachineIds(*modes), ElementsAre("B f32", "B q4_1"));
  EXPECT_TRUE(dropped.empty());
  nlohmann::json q4_stale = Measurement("C q4_1", 1, 0.9);  // the q4_1 file recalibrated elsewhere
  q4_stale["calibration"] = "h.calibration.q4_1.json";
  modes = MergeAutoTreeMeasurement(modes->dump(), q4_stale, &dropped);
  ASSERT_TRUE(modes.ok()) << modes.status();
  EXPECT_THAT(MachineIds(*modes), ElementsAre("B f32", "C q4_1"));
  EXPECT_THAT(dropped, ElementsAre("B q4_1"));

  absl::StatusOr<nlohmann::json> bad = MergeAutoTreeMeasurement("[1, 2]", Measurement("B", 1, 0.5));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(bad.status()), HasSubstr("not an auto-tree file"));
  EXPECT_FALSE(MergeAutoTreeMeasurement("nope", Measurement("B", 1, 0.5)).ok());
}

TEST(AutoTreeTest, PathSitsBesideTheHeads) {
  EXPECT_EQ(AutoTreePathFor("/m/heads.safetensors"), "/m/heads.auto_tree.json");
  EXPECT_EQ(AutoTreePathFor("/m/heads"), "/m/heads.auto_tree.json");
  EXPECT_EQ(AutoTreePathFor("heads.st"), "heads.st.auto_tree.json");
}

// ------------------------------------------------------------------ timing on stories260K

std::unique_ptr<Engine> StoriesEngineWithHeads(int64_t kv_bytes, int heads) {
  EngineOptions options;
  options.model_path = testing::kStoriesModel;
  options.tokenizer_path = testing::kStoriesTokenizer;
  options.kv_cache_bytes = kv_bytes;
  options.backend.threads = 1;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return nullptr;
  EXPECT_TRUE((*engine)->SetMedusa(RandomMedusaHeads((*engine)->config(), heads, 1, false, 11, 0.05f),
                                   MedusaTree::Chain(heads))
                  .ok());
  return *std::move(engine);
}

TEST(TreeTimingTest, TimesEveryBatchAndTreeAndReturnsEveryBlock) {
  ASSERT_MODEL_PRESENT(testing::kStoriesModel);
  std::unique_ptr<Engine> engine = StoriesEngineWithHeads(8 << 20, 3);
  ASSERT_NE(engine, nullptr);
  const int free_before = engine->kv_allocator().num_free();
  std::vector<MedusaTree> trees = {MedusaTree(), MedusaTree::Chain(3), *LoadTree("mc_sim_7b_63", 3)};
  TreeTimingOptions options{.batch_sizes = {1, 3}, .context_tokens = 40, .repeats = 2, .warmup = 1};
  absl::StatusOr<TreeTimings> timings = TimeTreeSteps(engine->timing_target(), trees, options);
  ASSERT_TRUE(timings.ok()) << timings.status();
  EXPECT_EQ(engine->kv_allocator().num_free(), free_before) << "timing must return every KV block";
  EXPECT_THAT(timings->batch_sizes, ElementsAre(1, 3));
  EXPECT_EQ(timings->context_tokens, 40);
  ASSERT_EQ(timings->step_ms.size(), 2u);
  for (const auto& row : timings->step_ms) {
    ASSERT_EQ(row.size(), 3u);
    for (double ms : row) EXPECT_GT(ms, 0.0);
  }
}

TEST(TreeTimingTest, TooSmallAPoolFailsClearlyAndLeaksNothing) {
  ASSERT_MODEL_PRESENT(testing::kStoriesModel);
  // stories260K: 5 layers * 2 * 32 floats * 4 bytes = 1280 bytes per slot, 20 KiB per block.
  std::unique_ptr<Engine> engine = StoriesEngineWithHeads(20480 * 12, 2);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->kv_allocator().num_blocks(), 12);
  std::vector<MedusaTree> trees = {MedusaTree(), MedusaTree::Chain(2)};
  absl::StatusOr<TreeTimings> timings =
      TimeTreeSteps(engine->timing_target(), trees, {.batch_sizes = {1, 4}, .context_tokens = 60, .repeats = 1});
  EXPECT_EQ(timings.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Message(timings.status()), HasSubstr("KV blocks"));
  EXPECT_EQ(engine->kv_allocator().num_free(), 12);
}

TEST(TreeTimingTest, RejectsTreesDeeperThanTheHeadsAndBadSizes) {
  ASSERT_MODEL_PRESENT(testing::kStoriesModel);
  std::unique_ptr<Engine> engine = StoriesEngineWithHeads(8 << 20, 2);
  ASSERT_NE(engine, nullptr);
  std::vector<MedusaTree> deep = {MedusaTree::Chain(3)};
  EXPECT_THAT(Message(TimeTreeSteps(engine->timing_target(), deep, {}).status()), HasSubstr("needs 3 Medusa heads; 2 are loaded"));
  std::vector<MedusaTree> plain = {MedusaTree()};
  EXPECT_EQ(TimeTreeSteps(engine->timing_target(), plain, {.batch_sizes = {0}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TimeTreeSteps(engine->timing_target(), plain, {.batch_sizes = {1}, .repeats = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MeasureAutoTreeTest, ReportHasEveryMeasurementAndAChoicePerBatchSize) {
  ASSERT_MODEL_PRESENT(testing::kStoriesModel);
  std::unique_ptr<Engine> engine = StoriesEngineWithHeads(8 << 20, 4);
  ASSERT_NE(engine, nullptr);
  const int free_before = engine->kv_allocator().num_free();
  AutoTreeOptions options{.tree_sizes = {8, 4, 5000},  // 5000: more than 4 heads allow, dropped
                          .timing = {.batch_sizes = {1, 2}, .context_tokens = 32, .repeats = 1}};
  absl::StatusOr<nlohmann::json> report = MeasureAutoTree(engine->timing_target(), FourHeads(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(engine->kv_allocator().num_free(), free_before);
  EXPECT_EQ((*report)["machine"]["backend"], "cpu");
  EXPECT_EQ((*report)["machine"]["threads"], 1);
  EXPECT_EQ((*report)["machine"]["id"], engine->backend().MachineId());
  EXPECT_EQ((*report)["topk_accuracy"].get<std::vector<std::vector<double>>>(), FourHeads().topk_accuracy)
      << "the accuracies the choice assumed";
  const nlohmann::json& m = (*report)["measurements"];
  ASSERT_EQ(m.size(), 6u) << m.dump();
  const absl::StatusOr<GreedyTree> eight = BuildGreedyTree(FourHeads(), 8);
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_EQ(m[i]["batch_size"], i < 3 ? 1 : 2);
    const int sizes[] = {0, 4, 8};
    EXPECT_EQ(m[i]["nodes"], sizes[i % 3]);
    const double acceleration = eight->expected_acceleration(m[i]["nodes"].get<int>());
    EXPECT_NEAR(m[i]["expected_acceleration"].get<double>(), acceleration, 1e-12);
    EXPECT_NEAR(m[i]["expected_speedup"].get<double>(), acceleration / m[i]["overhead"].get<double>(), 1e-9);
    EXPECT_NEAR(m[i]["overhead"].get<double>(),
                m[i]["step_ms"].get<double>() / m[i - i % 3]["step_ms"].get<double>(), 1e-9);
  }
  for (const char* b : {"1", "2"}) {
    const nlohmann::json& c = (*report)["choice"][b];
    const int nodes = c["nodes"].get<int>();
    EXPECT_TRUE(nodes == 0 || nodes == 4 || nodes == 8) << c.dump();
    EXPECT_EQ(c["paths"].get<Paths>(), BuildGreedyTree(FourHeads(), nodes)->ToJson()["paths"].get<Paths>());
    // The choice is the best measured speedup, or plain when none beats 1.
    double best = 1.0;
    for (const auto& row : m) {
      if (std::to_string(row["batch_size"].get<int>()) == b && row["nodes"] != 0) {
        best = std::max(best, row["expected_speedup"].get<double>());
      }
    }
    EXPECT_DOUBLE_EQ(c["expected_speedup"].get<double>(), best);
  }
  absl::StatusOr<AutoTree> parsed = AutoTree::Parse(report->dump(), "report", 4);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  // The timings come back per measured batch size and node count.
  for (const auto& row : m) {
    const std::map<int, TreeCost>& costs = parsed->CostsForBatch(row["batch_size"].get<int>());
    ASSERT_TRUE(costs.contains(row["nodes"].get<int>())) << row.dump();
    EXPECT_DOUBLE_EQ(costs.at(row["nodes"].get<int>()).overhead, row["overhead"].get<double>());
    EXPECT_DOUBLE_EQ(costs.at(row["nodes"].get<int>()).expected_speedup, row["expected_speedup"].get<double>());
  }
}

}  // namespace
}  // namespace medusa
