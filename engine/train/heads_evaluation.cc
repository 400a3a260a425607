#include "engine/train/heads_evaluation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/train/head_batch.h"
#include "kernels/base/status_macros.h"
#include "kernels/math/thread_pool.h"

namespace medusa {
namespace {

using math::ThreadPool;
using train_internal::CheckClassifier;
using train_internal::CheckData;
using train_internal::DraftRankOf;
using train_internal::ForwardBlocks;
using train_internal::Gather;
using train_internal::HeadBatch;
using train_internal::Project;
using train_internal::RankOf;
using train_internal::ResolveThreads;
using train_internal::SliceBegin;

// Rows per forward pass in evaluation.
constexpr int kEvalBatch = 64;

absl::Status CheckHeads(const MedusaHeadsWeights& heads, absl::Span<const float> classifier) {
  RETURN_IF_ERROR(heads.Validate());
  if (heads.num_heads < 1) return absl::InvalidArgumentError("Medusa heads: there are no heads");
  if (!heads.has_projection()) return CheckClassifier(classifier, heads.vocab, heads.dim);
  return absl::OkStatus();
}

}  // namespace

absl::Status ComputeHeadLogitsBatch(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                                    absl::Span<const float> hidden, int rows, absl::Span<float> out,
                                    int threads) {
  RETURN_IF_ERROR(CheckHeads(heads, classifier));
  if (rows < 1 || hidden.size() != static_cast<size_t>(rows) * heads.dim) {
    return absl::InvalidArgumentError(absl::StrCat("hidden has ", hidden.size(), " values, expected rows ", rows,
                                                   " x dim ", heads.dim));
  }
  const size_t want = static_cast<size_t>(heads.num_heads) * rows * heads.vocab;
  if (out.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("output has ", out.size(), " values, expected heads ",
                                                   heads.num_heads, " x rows ", rows, " x vocab ", heads.vocab));
  }
  ThreadPool pool(ResolveThreads(threads));
  HeadBatch ws;
  ws.Allocate(heads.num_heads, heads.num_layers, heads.dim, heads.vocab, rows, pool.size(), /*training=*/false,
              /*vocab_rows=*/false);  // logits go straight to `out`
  ws.rows = rows;
  std::copy(hidden.begin(), hidden.end(), ws.hidden.begin());
  ForwardBlocks(heads, ws, pool);
  Project(heads, classifier, ws, out.data(), pool);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<double>>> EvaluateTopK(const MedusaHeadsWeights& heads,
                                                              absl::Span<const float> classifier,
                                                              const DistillSet& data, int max_k, int threads) {
  RETURN_IF_ERROR(CheckHeads(heads, classifier));
  RETURN_IF_ERROR(CheckData(data, heads.num_heads, heads.dim, heads.vocab));
  if (max_k < 1) return absl::InvalidArgumentError(absl::StrCat("max_k is ", max_k, ", must be >= 1"));
  const int K = heads.num_heads, vocab = heads.vocab;
  ThreadPool pool(ResolveThreads(threads));
  HeadBatch ws;
  ws.Allocate(K, heads.num_layers, heads.dim, vocab, kEvalBatch, pool.size(), /*training=*/false);
  std::vector<std::vector<int64_t>> at_rank(K, std::vector<int64_t>(max_k, 0));  // hits at each rank < max_k
  std::vector<int64_t> valid(K, 0);
  std::vector<int64_t> batch_rows(kEvalBatch);
  // With a draft vocabulary a head proposes only its tokens: rank among them.
  const absl::Span<const int32_t> draft = heads.draft_vocab;
  std::vector<char> in_draft(draft.empty() ? 0 : vocab, 0);
  for (int32_t id : draft) in_draft[id] = 1;
  for (int begin = 0; begin < data.rows(); begin += kEvalBatch) {
    const int count = std::min(kEvalBatch, data.rows() - begin);
    for (int i = 0; i < count; ++i) batch_rows[i] = begin + i;
    Gather(data, batch_rows.data(), count, ws);
    ForwardBlocks(heads, ws, pool);
    const int stacked = K * count;
    Project(heads, classifier, ws, ws.logits.data(), pool);
    pool.Run(pool.size(), [&](int t, int n) {
      for (int m = SliceBegin(stacked, t, n); m < SliceBegin(stacked, t + 1, n); ++m) {
        const int target = ws.targets[m];
        const float* row = ws.logits.data() + static_cast<size_t>(m) * vocab;
        if (target < 0) {
          ws.row_rank[m] = -1;
        } else if (draft.empty()) {
          ws.row_rank[m] = RankOf(row, vocab, target);
        } else {
          ws.row_rank[m] = DraftRankOf(row, draft, in_draft, target, max_k);
        }
      }
    });
    for (int m = 0; m < stacked; ++m) {
      const int k = m / count;
      if (ws.targets[m] < 0) continue;
      ++valid[k];
      if (ws.row_rank[m] < max_k) ++at_rank[k][ws.row_rank[m]];
    }
  }
  std::vector<std::vector<double>> accuracy(K, std::vector<double>(max_k, 0.0));
  for (int k = 0; k < K; ++k) {
    int64_t within = 0;
    for (int j = 0; j < max_k; ++j) {
      within += at_rank[k][j];
      accuracy[k][j] = valid[k] > 0 ? static_cast<double>(within) / valid[k] : 0.0;
    }
  }
  return accuracy;
}

}  // namespace medusa
