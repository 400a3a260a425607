// Medusa candidate trees: a small tree checked by hand (order, parents, mask, positions,
// retrieval paths, top-k), validation errors, truncation, chains, the built-in presets and
// tree files.

#include "engine/medusa/tree.h"

#include <algorithm>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/model_test_util.h"

namespace medusa {
namespace {

using ::medusa::testing_util::WriteTemp;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

std::vector<int> Vec(absl::Span<const int> s) { return {s.begin(), s.end()}; }

// Given out of order on purpose: the tree sorts by (depth, path).
const std::vector<std::vector<int>> kSmallPaths = {{0, 0, 0}, {1}, {0, 1}, {0}, {1, 0}, {0, 0}};

MedusaTree SmallTree() {
  absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(kSmallPaths, 3);
  EXPECT_TRUE(tree.ok()) << tree.status();
  return tree.ok() ? *std::move(tree) : MedusaTree();
}

// Nodes, written out by hand:
//   0 root      depth 0
//   1 [0]       depth 1, head 0, rank 0, parent 0
//   2 [1]       depth 1, head 0, rank 1, parent 0
//   3 [0,0]     depth 2, head 1, rank 0, parent 1
//   4 [0,1]     depth 2, head 1, rank 1, parent 1
//   5 [1,0]     depth 2, head 1, rank 0, parent 2
//   6 [0,0,0]   depth 3, head 2, rank 0, parent 3
TEST(MedusaTreeTest, SmallTreeByHand) {
  MedusaTree tree = SmallTree();
  ASSERT_EQ(tree.num_nodes(), 7);
  EXPECT_EQ(tree.max_depth(), 3);
  EXPECT_EQ(tree.num_heads_used(), 3);
  EXPECT_EQ(tree.paths(), (std::vector<std::vector<int>>{
                              {0}, {1}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 0}}));
  std::vector<int> depth, head, rank, parent, position;
  for (int n = 0; n < 7; ++n) {
    depth.push_back(tree.depth(n));
    head.push_back(tree.head(n));
    rank.push_back(tree.rank(n));
    parent.push_back(tree.parent(n));
    position.push_back(tree.position_offset(n));
  }
  EXPECT_THAT(depth, ElementsAre(0, 1, 1, 2, 2, 2, 3));
  EXPECT_THAT(position, ElementsAre(0, 1, 1, 2, 2, 2, 3));
  EXPECT_THAT(head, ElementsAre(-1, 0, 0, 1, 1, 1, 2));
  EXPECT_THAT(rank, ElementsAre(-1, 0, 1, 0, 1, 0, 0));
  EXPECT_THAT(parent, ElementsAre(-1, 0, 0, 1, 1, 2, 3));
  EXPECT_TRUE(tree.path(0).empty());
  EXPECT_THAT(Vec(tree.path(5)), ElementsAre(1, 0));

  EXPECT_THAT(Vec(tree.ancestors(0)), ElementsAre(0));
  EXPECT_THAT(Vec(tree.ancestors(1)), ElementsAre(0, 1));
  EXPECT_THAT(Vec(tree.ancestors(2)), ElementsAre(0, 2));
  EXPECT_THAT(Vec(tree.ancestors(3)), ElementsAre(0, 1, 3));
  EXPECT_THAT(Vec(tree.ancestors(4)), ElementsAre(0, 1, 4));
  EXPECT_THAT(Vec(tree.ancestors(5)), ElementsAre(0, 2, 5));
  EXPECT_THAT(Vec(tree.ancestors(6)), ElementsAre(0, 1, 3, 6));

  EXPECT_THAT(Vec(tree.children(0)), ElementsAre(1, 2));
  EXPECT_THAT(Vec(tree.children(1)), ElementsAre(3, 4));
  EXPECT_THAT(Vec(tree.children(2)), ElementsAre(5));
  EXPECT_THAT(Vec(tree.children(3)), ElementsAre(6));
  EXPECT_TRUE(tree.is_leaf(4));
  EXPECT_FALSE(tree.is_leaf(3));

  // Row = query node, column = key node.
  const std::vector<uint8_t> mask = {
      1, 0, 0, 0, 0, 0, 0,  //
      1, 1, 0, 0, 0, 0, 0,  //
      1, 0, 1, 0, 0, 0, 0,  //
      1, 1, 0, 1, 0, 0, 0,  //
      1, 1, 0, 0, 1, 0, 0,  //
      1, 0, 1, 0, 0, 1, 0,  //
      1, 1, 0, 1, 0, 0, 1,  //
  };
  EXPECT_EQ(tree.mask(), mask);
  EXPECT_TRUE(tree.Attends(6, 3));
  EXPECT_FALSE(tree.Attends(6, 4));
  EXPECT_FALSE(tree.Attends(1, 6));

  ASSERT_EQ(tree.num_leaves(), 3);
  EXPECT_EQ(tree.leaf(0), 4);
  EXPECT_EQ(tree.leaf(1), 5);
  EXPECT_EQ(tree.leaf(2), 6);
  EXPECT_THAT(Vec(tree.retrieval_path(0)), ElementsAre(0, 1, 4));
  EXPECT_THAT(Vec(tree.retrieval_path(1)), ElementsAre(0, 2, 5));
  EXPECT_THAT(Vec(tree.retrieval_path(2)), ElementsAre(0, 1, 3, 6));
  EXPECT_THAT(tree.RetrieveIndices(), ElementsAre(0, 1, 4, -1,  //
                                                  0, 2, 5, -1,  //
                                                  0, 1, 3, 6));
  EXPECT_THAT(Vec(tree.topk_per_head()), ElementsAre(2, 2, 1));
  EXPECT_EQ(tree.topk(0), 2);
}

TEST(MedusaTreeTest, InputOrderDoesNotMatter) {
  std::vector<std::vector<int>> shuffled = kSmallPaths;
  std::mt19937 rng(3);
  for (int trial = 0; trial < 10; ++trial) {
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(shuffled, 3);
    ASSERT_TRUE(tree.ok());
    EXPECT_EQ(tree->paths(), SmallTree().paths());
    EXPECT_EQ(tree->mask(), SmallTree().mask());
  }
}

TEST(MedusaTreeTest, ValidationErrorsNameThePath) {
  struct Case {
    std::vector<std::vector<int>> paths;
    int num_heads;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {{{0}, {0, 1, 2}, {0, 1}, {1, 1}}, 4, {"path 3 [1, 1]", "prefix [1]", "not in the tree"}},
      {{{0}, {0, 0, 0}}, 4, {"path 1 [0, 0, 0]", "prefix [0, 0]"}},
      {{{0}, {0, -1}}, 4, {"path 1 [0, -1]", "rank -1"}},
      {{{0}, {0, 0}, {0, 0, 0}}, 2, {"path 2 [0, 0, 0]", "depth 3", "only 2 Medusa heads"}},
      {{{0}, {1}, {0}}, 4, {"path 2 [0]", "appears twice", "also path 0"}},
      {{{0}, {}}, 4, {"path 1 []", "empty"}},
      {{{5000}}, 4, {"path 0 [5000]", "rank 5000"}},
  };
  for (const Case& c : cases) {
    absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(c.paths, c.num_heads);
    ASSERT_FALSE(tree.ok()) << c.parts[0];
    EXPECT_EQ(tree.status().code(), absl::StatusCode::kInvalidArgument);
    for (const std::string& part : c.parts) EXPECT_THAT(Message(tree.status()), HasSubstr(part));
  }
}

TEST(MedusaTreeTest, RootOnlyTree) {
  for (const MedusaTree& tree : {MedusaTree(), *MedusaTree::FromPaths({}, 4), MedusaTree::Chain(0)}) {
    EXPECT_EQ(tree.num_nodes(), 1);
    EXPECT_EQ(tree.max_depth(), 0);
    EXPECT_EQ(tree.num_leaves(), 1);
    EXPECT_EQ(tree.leaf(0), 0);
    EXPECT_THAT(tree.RetrieveIndices(), ElementsAre(0));
    EXPECT_THAT(tree.mask(), ElementsAre(1));
    EXPECT_TRUE(tree.topk_per_head().empty());
  }
}

TEST(MedusaTreeTest, ChainByHand) {
  MedusaTree chain = MedusaTree::Chain(3);
  ASSERT_EQ(chain.num_nodes(), 4);
  EXPECT_EQ(chain.paths(), (std::vector<std::vector<int>>{{0}, {0, 0}, {0, 0, 0}}));
  EXPECT_THAT(std::vector<int>({chain.parent(1), chain.parent(2), chain.parent(3)}),
              ElementsAre(0, 1, 2));
  // A chain's mask is causal (lower triangular).
  EXPECT_THAT(chain.mask(), ElementsAre(1, 0, 0, 0,  //
                                        1, 1, 0, 0,  //
                                        1, 1, 1, 0,  //
                                        1, 1, 1, 1));
  ASSERT_EQ(chain.num_leaves(), 1);
  EXPECT_THAT(Vec(chain.retrieval_path(0)), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(Vec(chain.topk_per_head()), ElementsAre(1, 1, 1));
}

TEST(MedusaTreeTest, TruncateDropsDeepPaths) {
  MedusaTree cut = SmallTree().TruncateToDepth(2);
  EXPECT_EQ(cut.num_nodes(), 6);
  EXPECT_EQ(cut.max_depth(), 2);
  EXPECT_EQ(cut.paths(), (std::vector<std::vector<int>>{{0}, {1}, {0, 0}, {0, 1}, {1, 0}}));
  EXPECT_TRUE(cut.is_leaf(3));
  EXPECT_THAT(cut.RetrieveIndices(), ElementsAre(0, 1, 3, 0, 1, 4, 0, 2, 5));
  EXPECT_THAT(Vec(cut.topk_per_head()), ElementsAre(2, 2));
  EXPECT_EQ(SmallTree().TruncateToDepth(0).num_nodes(), 1);
  EXPECT_EQ(SmallTree().TruncateToDepth(9).paths(), SmallTree().paths());
}

// Structural invariants, on every preset.
void CheckInvariants(const MedusaTree& tree) {
  const int n = tree.num_nodes();
  int leaves = 0;
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(static_cast<int>(tree.path(i).size()), tree.depth(i));
    if (i > 0) {
      const int p = tree.parent(i);
      ASSERT_LT(p, i);  // parents come first
      EXPECT_EQ(tree.depth(p) + 1, tree.depth(i));
      EXPECT_EQ(Vec(tree.path(p)), Vec(tree.path(i).subspan(0, tree.depth(p))));
      EXPECT_EQ(tree.rank(i), tree.path(i).back());
      std::vector<int> want = Vec(tree.ancestors(p));
      want.push_back(i);
      EXPECT_EQ(Vec(tree.ancestors(i)), want);
      EXPECT_LT(tree.rank(i), tree.topk(tree.head(i)));
      EXPECT_THAT(Vec(tree.children(p)), testing::Contains(i));
      // Sorted by (depth, path).
      const auto a = Vec(tree.path(i - 1)), b = Vec(tree.path(i));
      EXPECT_TRUE(a.size() < b.size() || (a.size() == b.size() && a < b));
    }
    int attended = 0;
    for (int j = 0; j < n; ++j) attended += tree.Attends(i, j);
    EXPECT_EQ(attended, tree.depth(i) + 1);
    for (int a : tree.ancestors(i)) EXPECT_TRUE(tree.Attends(i, a));
    leaves += tree.is_leaf(i);
  }
  EXPECT_EQ(leaves, tree.num_leaves());
}

TEST(MedusaTreePresetTest, AllPresetsBuild) {
  const std::vector<std::string> names = TreePresetNames();
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "default");
  EXPECT_EQ(names[1], "mc_sim_7b_63");
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::vector<std::vector<int>>> paths = TreePresetPaths(name);
    ASSERT_TRUE(paths.ok()) << paths.status();
    EXPECT_EQ(paths->size(), 63u);
    absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(*paths, 5);
    ASSERT_TRUE(tree.ok()) << tree.status();
    EXPECT_EQ(tree->num_nodes(), 64);
    CheckInvariants(*tree);
  }
}

TEST(MedusaTreePresetTest, DefaultIsMcSim7b63) {
  absl::StatusOr<std::vector<std::vector<int>>> def = TreePresetPaths("default");
  absl::StatusOr<std::vector<std::vector<int>>> mc = TreePresetPaths("mc_sim_7b_63");
  ASSERT_TRUE(def.ok() && mc.ok());
  EXPECT_EQ(*def, *mc);
  // The reference's list starts [[0], [0, 0], [1], [0, 1], [2], [0, 0, 0], ...] and has
  // 42 root-to-leaf paths of up to 4 tokens; heads need top-10, 10, 10 and 2.
  EXPECT_EQ((std::vector<std::vector<int>>(mc->begin(), mc->begin() + 6)),
            (std::vector<std::vector<int>>{{0}, {0, 0}, {1}, {0, 1}, {2}, {0, 0, 0}}));
  MedusaTree tree = *MedusaTree::FromPaths(*mc, 4);
  EXPECT_EQ(tree.max_depth(), 4);
  EXPECT_EQ(tree.num_leaves(), 42);
  EXPECT_THAT(Vec(tree.topk_per_head()), ElementsAre(10, 10, 10, 2));
  EXPECT_EQ(tree.RetrieveIndices().size(), 42u * 5u);
}

TEST(MedusaTreePresetTest, UnknownPresetIsNotFound) {
  absl::StatusOr<std::vector<std::vector<int>>> p = TreePresetPaths("vicuna_70b");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(p.status()), AllOf(HasSubstr("vicuna_70b"), HasSubstr("mc_sim_7b_63")));
}

// ------------------------------------------------------------------ LoadTree

TEST(LoadTreeTest, PresetsAreCutToTheHeads) {
  absl::StatusOr<MedusaTree> full = LoadTree("default", 5);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->num_nodes(), 64);
  absl::StatusOr<MedusaTree> three = LoadTree("mc_sim_7b_63", 3);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->max_depth(), 3);
  EXPECT_EQ(three->num_nodes(), 64 - 2);  // the two depth-4 paths go
  absl::StatusOr<MedusaTree> one = LoadTree("default", 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->num_nodes(), 11);
}

TEST(LoadTreeTest, ChainHasOneNodePerHead) {
  absl::StatusOr<MedusaTree> chain = LoadTree("chain", 4);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(chain->num_nodes(), 5);
  EXPECT_EQ(chain->max_depth(), 4);
  EXPECT_EQ(chain->num_leaves(), 1);
}

// "auto" belongs to a heads file; only the engine, which knows it, resolves it.
TEST(LoadTreeTest, AutoNeedsTheEngine) {
  absl::StatusOr<MedusaTree> tree = LoadTree("auto", 4);
  EXPECT_EQ(tree.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Message(tree.status()), HasSubstr("medusa tree --auto"));
}

TEST(LoadTreeTest, ReadsJsonFiles) {
  absl::StatusOr<MedusaTree> list =
      LoadTree(WriteTemp("tree.json", "[[0], [1], [0, 0], [0, 0, 0], [0, 1], [1, 0]]"), 3);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->paths(), SmallTree().paths());
  absl::StatusOr<MedusaTree> object =
      LoadTree(WriteTemp("tree_obj.json", R"({"paths": [[0], [0, 0]], "acceptance": 2.1})"), 2);
  ASSERT_TRUE(object.ok()) << object.status();
  EXPECT_EQ(object->num_nodes(), 3);
}

TEST(LoadTreeTest, FileErrors) {
  const std::string deep = WriteTemp("deep.json", "[[0], [0, 0], [0, 0, 0]]");
  absl::StatusOr<MedusaTree> too_deep = LoadTree(deep, 2);
  EXPECT_EQ(too_deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(too_deep.status()),
              AllOf(HasSubstr("[0, 0, 0]"), HasSubstr("only 2 Medusa heads"), HasSubstr(deep)));

  struct Case {
    const char* text;
    const char* part;
  };
  for (const Case& c : {Case{"[[0], [0, 0", "not valid JSON"}, Case{"{\"x\": 1}", "expected a list"},
                        Case{"[[0], 3]", "path 1 is not a list"},
                        Case{"[[0], [0, -2]]", "holds -2"}, Case{"[[0], [0, 1.5]]", "holds 1.5"},
                        Case{"[[1]]", ""}}) {
    absl::StatusOr<MedusaTree> tree = LoadTree(WriteTemp("bad.json", c.text), 4);
    if (std::string(c.part).empty()) {
      EXPECT_TRUE(tree.ok()) << c.text;  // [[1]] alone is a valid (odd) tree
      continue;
    }
    EXPECT_EQ(tree.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(Message(tree.status()), HasSubstr(c.part));
  }

  absl::StatusOr<MedusaTree> missing = LoadTree("/nonexistent/tree.json", 4);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), AllOf(HasSubstr("/nonexistent/tree.json"),
                                               HasSubstr("neither a preset")));
  EXPECT_EQ(LoadTree("default", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace medusa
