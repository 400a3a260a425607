#include "engine/medusa/candidates.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace medusa {
// ------------------------------------------------------------------ CandidateBuilder

CandidateBuilder::CandidateBuilder(const MedusaTree& tree, int vocab)
    : tree_(&tree), vocab_(vocab) {
  topk_begin_.assign(1, 0);
  for (int h = 0; h < tree.num_heads_used(); ++h) topk_begin_.push_back(topk_begin_.back() + tree.topk(h));
  topk_ids_.assign(topk_begin_.back(), 0);
  node_tokens_.assign(tree.num_nodes(), 0);
  path_tokens_.assign(static_cast<size_t>(tree.num_leaves()) * (tree.max_depth() + 1), -1);
}

absl::StatusOr<CandidateBuilder> CandidateBuilder::Create(const MedusaTree& tree, int vocab) {
  if (vocab <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary size must be positive, got ", vocab));
  }
  for (int h = 0; h < tree.num_heads_used(); ++h) {
    if (tree.topk(h) > vocab) {
      return absl::InvalidArgumentError(absl::StrCat("the Medusa tree asks head ", h, " for its top-",
                                                     tree.topk(h), " tokens but the vocabulary has ",
                                                     vocab));
    }
  }
  return CandidateBuilder(tree, vocab);
}

absl::Span<int32_t> CandidateBuilder::mutable_head_topk(int head) {
  return absl::MakeSpan(topk_ids_).subspan(topk_begin_[head], topk_begin_[head + 1] - topk_begin_[head]);
}

absl::Span<const int32_t> CandidateBuilder::head_topk(int head) const {
  return absl::MakeConstSpan(topk_ids_).subspan(topk_begin_[head],
                                                topk_begin_[head + 1] - topk_begin_[head]);
}

absl::Status CandidateBuilder::Build(int32_t root_token, absl::Span<const float> head_logits,
                                     absl::Span<const int32_t> draft_vocab) {
  const int heads = tree_->num_heads_used();
  const int width = draft_vocab.empty() ? vocab_ : static_cast<int>(draft_vocab.size());
  if (head_logits.size() < static_cast<size_t>(heads) * width) {
    return absl::InvalidArgumentError(absl::StrCat("Medusa candidates: the tree uses ", heads,
                                                   " heads of ", width, " logits, got ",
                                                   head_logits.size(), " values"));
  }
  if (root_token < 0 || root_token >= vocab_) {
    return absl::InvalidArgumentError(
        absl::StrCat("Medusa candidates: root token ", root_token, " outside the vocabulary"));
  }
  for (int h = 0; h < heads; ++h) {
    if (tree_->topk(h) > width) {
      return absl::InvalidArgumentError(absl::StrCat("the Medusa tree asks head ", h, " for its top-",
                                                     tree_->topk(h), " tokens but the draft vocabulary has ",
                                                     width));
    }
  }
  for (int h = 0; h < heads; ++h) {
    const absl::Span<int32_t> ids = mutable_head_topk(h);
    topk_.Select(head_logits.subspan(static_cast<size_t>(h) * width, width), ids);
    if (!draft_vocab.empty()) {
      for (int32_t& id : ids) id = draft_vocab[id];
    }
  }
  AssignTokens(root_token);
  return absl::OkStatus();
}

void CandidateBuilder::AssignTokens(int32_t root_token) {
  const MedusaTree& tree = *tree_;
  node_tokens_[0] = root_token;
  for (int n = 1; n < tree.num_nodes(); ++n) {
    node_tokens_[n] = topk_ids_[topk_begin_[tree.head(n)] + tree.rank(n)];
  }
  FillPathTokens();
}

absl::Status CandidateBuilder::AssignNodeTokens(absl::Span<const int32_t> tokens) {
  if (tokens.size() != node_tokens_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokens.size(), " node tokens for a tree of ", node_tokens_.size(), " nodes"));
  }
  for (int32_t token : tokens) {
    if (token < 0 || token >= vocab_) {
      return absl::InvalidArgumentError(absl::StrCat("node token ", token, " is outside the vocabulary"));
    }
  }
  std::copy(tokens.begin(), tokens.end(), node_tokens_.begin());
  FillPathTokens();
  return absl::OkStatus();
}

void CandidateBuilder::FillPathTokens() {
  const MedusaTree& tree = *tree_;
  const int width = tree.max_depth() + 1;
  for (int i = 0; i < tree.num_leaves(); ++i) {
    int32_t* row = path_tokens_.data() + static_cast<size_t>(i) * width;
    absl::Span<const int> nodes = tree.retrieval_path(i);
    for (size_t j = 0; j < nodes.size(); ++j) row[j] = node_tokens_[nodes[j]];
  }
}

absl::Span<const int32_t> CandidateBuilder::path_tokens(int leaf_index) const {
  const int width = tree_->max_depth() + 1;
  return absl::MakeConstSpan(path_tokens_)
      .subspan(static_cast<size_t>(leaf_index) * width, tree_->retrieval_path(leaf_index).size());
}

}  // namespace medusa
