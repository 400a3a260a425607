#pragma once
// Candidate tokens for one Medusa step: each head's top-k over its logits, and the
// tree's token per node (node n's token = head(n)'s top-(rank(n)+1) token, the root's
// = the base model's token). Buffers are sized once per tree; a step allocates nothing.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/medusa/tree.h"
#include "kernels/topk.h"

namespace medusa {

using kernels::TopK;

class CandidateBuilder {
 public:
  // The tree must outlive the builder. InvalidArgument when the tree asks a head for
  // more candidates than the vocabulary has.
  static absl::StatusOr<CandidateBuilder> Create(const MedusaTree& tree, int vocab);

  // One step from the heads' logits: `head_logits` holds at least tree.num_heads_used()
  // rows of `vocab` values (row h = head h; extra rows are ignored), or, with a draft
  // vocabulary, rows of draft_vocab.size() values, entry i for token draft_vocab[i]
  // (Backend::MedusaHeadLogits). InvalidArgument when it is too short, the root token is
  // outside the vocabulary or the tree asks a head for more tokens than the draft has.
  absl::Status Build(int32_t root_token, absl::Span<const float> head_logits,
                     absl::Span<const int32_t> draft_vocab = {});

  // For a backend that computes the top-k itself: fill mutable_head_topk(h) for every
  // used head (tree.topk(h) ids, best first), then call AssignTokens.
  absl::Span<int32_t> mutable_head_topk(int head);
  void AssignTokens(int32_t root_token);
  // For heads whose tokens depend on the path (Hydra): every node's token, root first, in the
  // tree's node order. InvalidArgument for another count or a token outside the vocabulary.
  absl::Status AssignNodeTokens(absl::Span<const int32_t> tokens);

  absl::Span<const int32_t> head_topk(int head) const;  // tree.topk(head) ids, best first
  // The token of every tree node, node 0 = root: the sequence to verify this step.
  absl::Span<const int32_t> node_tokens() const { return node_tokens_; }
  // The candidate sequence of retrieval path i (tree.retrieval_path(i)): root .. leaf tokens.
  absl::Span<const int32_t> path_tokens(int leaf_index) const;

  const MedusaTree& tree() const { return *tree_; }
  int vocab() const { return vocab_; }

 private:
  CandidateBuilder(const MedusaTree& tree, int vocab);
  void FillPathTokens();  // path_tokens_ from node_tokens_

  const MedusaTree* tree_;
  int vocab_;
  std::vector<int> topk_begin_;      // head h's ids are topk_ids_[topk_begin_[h], topk_begin_[h+1])
  std::vector<int32_t> topk_ids_;
  std::vector<int32_t> node_tokens_;
  std::vector<int32_t> path_tokens_;  // [num_leaves, max_depth + 1], padded with -1
  TopK topk_;
};

}  // namespace medusa
