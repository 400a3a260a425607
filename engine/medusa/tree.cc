#include "engine/medusa/tree.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

struct TreePreset {
  const char* name;
  const char* paths_json;
};

constexpr TreePreset kPresets[] = {
#include "engine/medusa/tree_presets.inc"
};
constexpr char kDefaultPreset[] = "mc_sim_7b_63";

std::string PathString(absl::Span<const int> path) {
  return absl::StrCat("[", absl::StrJoin(path, ", "), "]");
}

// The reference's node order: by depth, then lexicographically.
bool TreeOrder(const std::vector<int>& a, const std::vector<int>& b) {
  return a.size() != b.size() ? a.size() < b.size() : a < b;
}

absl::Status CheckPaths(const std::vector<std::vector<int>>& paths, int num_heads) {
  if (paths.size() > static_cast<size_t>(MedusaTree::kMaxPaths)) {
    return absl::InvalidArgumentError(absl::StrCat("Medusa tree: ", paths.size(),
                                                   " paths, more than the limit of ",
                                                   MedusaTree::kMaxPaths));
  }
  const int depth_limit = num_heads > 0 ? std::min(num_heads, MedusaTree::kMaxDepth)
                                        : MedusaTree::kMaxDepth;
  std::map<std::vector<int>, size_t> index;  // path -> its position in the list
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::vector<int>& p = paths[i];
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("Medusa tree: path ", i, " ", PathString(p), " ", what));
    };
    if (p.empty()) return bad("is empty (the root is implicit)");
    for (int rank : p) {
      if (rank < 0 || rank > MedusaTree::kMaxRank) {
        return bad(absl::StrCat("has rank ", rank, "; ranks must be in [0, ",
                                MedusaTree::kMaxRank, "]"));
      }
    }
    if (static_cast<int>(p.size()) > depth_limit) {
      return bad(num_heads > 0 && num_heads <= MedusaTree::kMaxDepth
                     ? absl::StrCat("has depth ", p.size(), " but only ", num_heads,
                                    " Medusa heads are available")
                     : absl::StrCat("has depth ", p.size(), ", more than the limit of ",
                                    MedusaTree::kMaxDepth));
    }
    auto [it, inserted] = index.emplace(p, i);
    if (!inserted) return bad(absl::StrCat("appears twice (also path ", it->second, ")"));
  }
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::vector<int>& p = paths[i];
    for (size_t len = 1; len < p.size(); ++len) {
      std::vector<int> prefix(p.begin(), p.begin() + len);
      if (!index.contains(prefix)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Medusa tree: path ", i, " ", PathString(p), " needs its prefix ", PathString(prefix),
            ", which is not in the tree (every prefix of a path must be a path too)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

MedusaTree::MedusaTree() { Build({}); }

absl::StatusOr<MedusaTree> MedusaTree::FromPaths(const std::vector<std::vector<int>>& paths,
                                                 int num_heads) {
  RETURN_IF_ERROR(CheckPaths(paths, num_heads));
  std::vector<std::vector<int>> sorted = paths;
  std::sort(sorted.begin(), sorted.end(), TreeOrder);
  MedusaTree tree;
  tree.Build(std::move(sorted));
  return tree;
}

MedusaTree MedusaTree::Chain(int depth) {
  depth = std::clamp(depth, 0, kMaxDepth);
  std::vector<std::vector<int>> paths;
  for (int d = 1; d <= depth; ++d) paths.push_back(std::vector<int>(d, 0));
  MedusaTree tree;
  tree.Build(std::move(paths));
  return tree;
}

MedusaTree MedusaTree::TruncateToDepth(int max_depth) const {
  std::vector<std::vector<int>> kept;
  for (int n = 1; n < num_nodes(); ++n) {
    if (depth(n) <= max_depth) kept.emplace_back(path(n).begin(), path(n).end());
  }
  MedusaTree tree;
  tree.Build(std::move(kept));  // already in tree order
  return tree;
}

// Precondition: paths are valid and sorted in tree order.
void MedusaTree::Build(std::vector<std::vector<int>> sorted_paths) {
  const int n = static_cast<int>(sorted_paths.size()) + 1;
  depth_.assign(n, 0);
  rank_.assign(n, -1);
  parent_.assign(n, -1);
  path_begin_.assign(1, 0);
  path_data_.clear();
  std::map<std::vector<int>, int> node_of;
  node_of[{}] = 0;
  path_begin_.push_back(0);  // the root's empty path
  max_depth_ = 0;
  for (int i = 1; i < n; ++i) {
    const std::vector<int>& p = sorted_paths[i - 1];
    depth_[i] = static_cast<int>(p.size());
    rank_[i] = p.back();
    parent_[i] = node_of.at(std::vector<int>(p.begin(), p.end() - 1));
    node_of[p] = i;
    max_depth_ = std::max(max_depth_, depth_[i]);
    path_data_.insert(path_data_.end(), p.begin(), p.end());
    path_begin_.push_back(static_cast<int>(path_data_.size()));
  }

  // Ancestors (root .. itself): the parent's list plus the node.
  ancestor_begin_.assign(1, 0);
  ancestor_data_.clear();
  for (int i = 0; i < n; ++i) {
    if (i > 0) {
      const int p = parent_[i];
      for (int k = ancestor_begin_[p]; k < ancestor_begin_[p + 1]; ++k) {
        ancestor_data_.push_back(ancestor_data_[k]);
      }
    }
    ancestor_data_.push_back(i);
    ancestor_begin_.push_back(static_cast<int>(ancestor_data_.size()));
  }

  // Children, in index order (counting sort by parent).
  child_begin_.assign(n + 1, 0);
  for (int i = 1; i < n; ++i) ++child_begin_[parent_[i] + 1];
  for (int i = 0; i < n; ++i) child_begin_[i + 1] += child_begin_[i];
  child_data_.assign(n > 0 ? n - 1 : 0, 0);
  std::vector<int> fill(child_begin_.begin(), child_begin_.end() - 1);
  for (int i = 1; i < n; ++i) child_data_[fill[parent_[i]]++] = i;

  mask_.assign(static_cast<size_t>(n) * n, 0);
  for (int i = 0; i < n; ++i) {
    for (int a : ancestors(i)) mask_[static_cast<size_t>(i) * n + a] = 1;
  }

  leaves_.clear();
  for (int i = 0; i < n; ++i) {
    if (children(i).empty()) leaves_.push_back(i);
  }

  topk_.assign(max_depth_, 0);
  for (int i = 1; i < n; ++i) topk_[depth_[i] - 1] = std::max(topk_[depth_[i] - 1], rank_[i] + 1);
}

std::vector<std::vector<int>> MedusaTree::paths() const {
  std::vector<std::vector<int>> out;
  for (int n = 1; n < num_nodes(); ++n) out.emplace_back(path(n).begin(), path(n).end());
  return out;
}

absl::Span<const int> MedusaTree::path(int node) const {
  return absl::MakeConstSpan(path_data_).subspan(path_begin_[node],
                                                 path_begin_[node + 1] - path_begin_[node]);
}

absl::Span<const int> MedusaTree::ancestors(int node) const {
  return absl::MakeConstSpan(ancestor_data_)
      .subspan(ancestor_begin_[node], ancestor_begin_[node + 1] - ancestor_begin_[node]);
}

absl::Span<const int> MedusaTree::children(int node) const {
  return absl::MakeConstSpan(child_data_)
      .subspan(child_begin_[node], child_begin_[node + 1] - child_begin_[node]);
}

std::vector<int> MedusaTree::RetrieveIndices() const {
  const int width = max_depth_ + 1;
  std::vector<int> out(static_cast<size_t>(num_leaves()) * width, -1);
  for (int i = 0; i < num_leaves(); ++i) {
    absl::Span<const int> p = retrieval_path(i);
    std::copy(p.begin(), p.end(), out.begin() + static_cast<size_t>(i) * width);
  }
  return out;
}

// ------------------------------------------------------------------ presets, files

std::vector<std::string> TreePresetNames() {
  std::vector<std::string> names = {"default"};
  for (const TreePreset& p : kPresets) names.push_back(p.name);
  return names;
}

absl::StatusOr<std::vector<std::vector<int>>> ParseTreePaths(const std::string& json_text,
                                                             const std::string& source) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("Medusa tree '", source, "': ", what));
  };
  absl::StatusOr<nlohmann::json> parsed = ParseJson(json_text, absl::StrCat("Medusa tree '", source, "'"));
  if (!parsed.ok()) return parsed.status();
  nlohmann::json doc = *std::move(parsed);
  if (doc.is_object()) {
    for (const char* key : {"paths", "medusa_choices"}) {
      if (doc.contains(key)) {
        nlohmann::json inner = doc[key];
        doc = std::move(inner);
        break;
      }
    }
  }
  if (!doc.is_array()) {
    return bad("expected a list of paths (lists of ranks), or an object with a \"paths\" list");
  }
  std::vector<std::vector<int>> paths;
  paths.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    const nlohmann::json& p = doc[i];
    if (!p.is_array()) return bad(absl::StrCat("path ", i, " is not a list: ", JsonSnippet(p)));
    std::vector<int> path;
    for (const nlohmann::json& r : p) {
      if (!r.is_number_integer() || r.get<int64_t>() < 0 ||
          r.get<int64_t>() > MedusaTree::kMaxRank) {
        return bad(absl::StrCat("path ", i, " ", JsonSnippet(p), " holds ", JsonSnippet(r),
                                "; ranks are integers in [0, ", MedusaTree::kMaxRank, "]"));
      }
      path.push_back(r.get<int>());
    }
    paths.push_back(std::move(path));
  }
  return paths;
}

absl::StatusOr<std::vector<std::vector<int>>> TreePresetPaths(const std::string& name) {
  const std::string wanted = name == "default" ? kDefaultPreset : name;
  for (const TreePreset& p : kPresets) {
    if (wanted == p.name) return ParseTreePaths(p.paths_json, absl::StrCat("preset ", p.name));
  }
  return absl::NotFoundError(absl::StrCat("no Medusa tree preset named '", name, "' (presets: ",
                                          absl::StrJoin(TreePresetNames(), ", "), ")"));
}

absl::StatusOr<MedusaTree> LoadTree(const std::string& name_or_path, int num_heads) {
  if (num_heads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Medusa tree needs at least one head, got ", num_heads));
  }
  if (name_or_path == "auto") {
    return absl::FailedPreconditionError(
        "the 'auto' Medusa tree is measured for a heads file: the engine reads it from "
        "<heads>.auto_tree.json (made by `medusa tree --auto`) when the heads are given");
  }
  if (name_or_path == "chain") return MedusaTree::Chain(num_heads);
  if (absl::StatusOr<std::vector<std::vector<int>>> preset = TreePresetPaths(name_or_path);
      preset.ok()) {
    ASSIGN_OR_RETURN(MedusaTree full, MedusaTree::FromPaths(*preset, /*num_heads=*/0));
    return full.TruncateToDepth(num_heads);
  }
  absl::StatusOr<std::string> text = ReadFileBounded(name_or_path, kMaxJsonConfigBytes, "Medusa tree file");
  if (absl::IsNotFound(text.status())) {
    return absl::NotFoundError(absl::StrCat("Medusa tree '", name_or_path,
                                            "' is neither a preset (chain, ",
                                            absl::StrJoin(TreePresetNames(), ", "),
                                            ") nor a readable JSON file"));
  }
  if (!text.ok()) return text.status();
  ASSIGN_OR_RETURN(std::vector<std::vector<int>> paths, ParseTreePaths(*text, name_or_path));
  absl::StatusOr<MedusaTree> tree = MedusaTree::FromPaths(paths, num_heads);
  if (!tree.ok()) {
    return absl::Status(tree.status().code(),
                        absl::StrCat(tree.status().message(), " (in '", name_or_path, "')"));
  }
  return tree;
}

}  // namespace medusa
