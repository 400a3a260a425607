#include "engine/train/heads_evaluation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/train/head_batch.h"
#include "kernels/base/status_macros.h"
#include "kernels/math/blas.h"
#include "kernels/math/thread_pool.h"

namespace medusa {
namespace {

using math::ThreadPool;
using train_internal::CheckClassifier;
using train_internal::CheckData;
using train_internal::CheckEmbedding;
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

absl::Status CheckHeads(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                        absl::Span<const float> embedding = {}) {
  RETURN_IF_ERROR(heads.Validate());
  if (heads.num_heads < 1) return absl::InvalidArgumentError("Medusa heads: there are no heads");
  RETURN_IF_ERROR(CheckEmbedding(heads.kind, embedding, heads.vocab, heads.dim));
  if (!heads.has_projection()) RETURN_IF_ERROR(CheckClassifier(classifier, heads.vocab, heads.dim));
  return math::LoadBlas();  // the batch products (head_batch.h)
}

}  // namespace

absl::Status ComputeHeadLogitsBatch(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                                    absl::Span<const float> hidden, int rows, absl::Span<float> out,
                                    int threads) {
  if (heads.kind == HeadKind::kHydra) {
    return absl::InvalidArgumentError("Hydra heads' logits depend on a path of tokens, not on hidden states alone");
  }
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
                                                              const DistillSet& data, int max_k, int threads,
                                                              absl::Span<const float> embedding) {
  ASSIGN_OR_RETURN(HeadsAccuracy accuracy, EvaluateHeads(heads, classifier, data, max_k, threads, embedding));
  return std::move(accuracy.topk);
}

absl::StatusOr<HeadsAccuracy> EvaluateHeads(const MedusaHeadsWeights& heads, absl::Span<const float> classifier,
                                            const DistillSet& data, int max_k, int threads,
                                            absl::Span<const float> embedding) {
  RETURN_IF_ERROR(CheckHeads(heads, classifier, embedding));
  RETURN_IF_ERROR(CheckData(data, heads.num_heads, heads.dim, heads.vocab, heads.kind));
  if (max_k < 1) return absl::InvalidArgumentError(absl::StrCat("max_k is ", max_k, ", must be >= 1"));
  const int K = heads.num_heads, vocab = heads.vocab;
  ThreadPool pool(ResolveThreads(threads));
  HeadBatch ws;
  ws.Allocate(K, heads.num_layers, heads.dim, vocab, kEvalBatch, pool.size(), /*training=*/false,
              /*vocab_rows=*/true, heads.kind);
  ws.embedding = embedding;
  std::vector<std::vector<int64_t>> at_rank(K, std::vector<int64_t>(max_k, 0));  // hits at each rank < max_k
  std::vector<int64_t> valid(K, 0);
  std::vector<int64_t> chain_valid(K, 0), chain_hits(K, 0);
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
    for (int i = 0; i < count; ++i) {  // the chain of heads 0..k on row i
      bool right = true;
      for (int k = 0; k < K && ws.targets[static_cast<size_t>(k) * count + i] >= 0; ++k) {
        right = right && ws.row_rank[static_cast<size_t>(k) * count + i] == 0;
        ++chain_valid[k];
        chain_hits[k] += right;
      }
    }
  }
  HeadsAccuracy accuracy;
  accuracy.topk.assign(K, std::vector<double>(max_k, 0.0));
  accuracy.chain_top1.assign(K, 0.0);
  for (int k = 0; k < K; ++k) {
    int64_t within = 0;
    for (int j = 0; j < max_k; ++j) {
      within += at_rank[k][j];
      accuracy.topk[k][j] = valid[k] > 0 ? static_cast<double>(within) / valid[k] : 0.0;
    }
    if (chain_valid[k] > 0) accuracy.chain_top1[k] = static_cast<double>(chain_hits[k]) / chain_valid[k];
  }
  return accuracy;
}

namespace {

// One head's evaluated rows: the logits of the tokens it proposes from, and where the target is
// among them (-1: a token it cannot propose).
struct ProposalRows {
  int width = 0;
  std::vector<float> logits;  // [rows, width]
  std::vector<int32_t> target;
  int rows() const { return static_cast<int>(target.size()); }
  const float* Row(int r) const { return logits.data() + static_cast<size_t>(r) * width; }
};

// Mean over rows with a proposable target of -log softmax(z / T)[target].
double MeanNll(const ProposalRows& rows, double temperature, ThreadPool& pool) {
  std::vector<double> sum(pool.size(), 0.0);
  std::vector<int64_t> count(pool.size(), 0);
  const double inv = 1.0 / temperature;
  pool.Run(pool.size(), [&](int t, int n) {
    for (int r = SliceBegin(rows.rows(), t, n); r < SliceBegin(rows.rows(), t + 1, n); ++r) {
      if (rows.target[r] < 0) continue;
      const float* z = rows.Row(r);
      const float top = *std::max_element(z, z + rows.width);
      double total = 0.0;
      for (int i = 0; i < rows.width; ++i) total += std::exp((z[i] - top) * inv);
      sum[t] += std::log(total) - (z[rows.target[r]] - top) * inv;
      ++count[t];
    }
  });
  double s = 0.0;
  int64_t c = 0;
  for (size_t t = 0; t < sum.size(); ++t) s += sum[t], c += count[t];
  return c > 0 ? s / static_cast<double>(c) : 0.0;
}

// Top-1 expected calibration error over every row at temperature T.
double TopOneEce(const ProposalRows& rows, double temperature) {
  constexpr int kBins = 15;
  std::vector<double> confidence(kBins, 0.0), correct(kBins, 0.0);
  std::vector<int64_t> count(kBins, 0);
  const double inv = 1.0 / temperature;
  for (int r = 0; r < rows.rows(); ++r) {
    const float* z = rows.Row(r);
    const int best = static_cast<int>(std::max_element(z, z + rows.width) - z);
    double total = 0.0;
    for (int i = 0; i < rows.width; ++i) total += std::exp((z[i] - z[best]) * inv);
    const double p = 1.0 / total;  // the top proposal's probability
    const int bin = std::min(kBins - 1, static_cast<int>(p * kBins));
    confidence[bin] += p;
    correct[bin] += rows.target[r] == best ? 1.0 : 0.0;
    ++count[bin];
  }
  double ece = 0.0;
  for (int b = 0; b < kBins; ++b) ece += std::fabs(correct[b] - confidence[b]);
  return rows.rows() > 0 ? ece / rows.rows() : 0.0;
}

// The temperature minimizing MeanNll: golden-section search on 1/T in [1/20, 20] (the
// likelihood is log-concave in 1/T, so the search finds its one minimum).
double FitTemperature(const ProposalRows& rows, ThreadPool& pool) {
  const double phi = (std::sqrt(5.0) - 1.0) / 2.0;
  double lo = std::log(0.05), hi = std::log(20.0);  // over log(1/T)
  auto nll = [&](double log_beta) { return MeanNll(rows, std::exp(-log_beta), pool); };
  double a = hi - phi * (hi - lo), b = lo + phi * (hi - lo);
  double fa = nll(a), fb = nll(b);
  for (int i = 0; i < 40; ++i) {
    if (fa < fb) {
      hi = b, b = a, fb = fa;
      a = hi - phi * (hi - lo), fa = nll(a);
    } else {
      lo = a, a = b, fa = fb;
      b = lo + phi * (hi - lo), fb = nll(b);
    }
  }
  return std::exp(-(lo + hi) / 2.0);
}

}  // namespace

absl::StatusOr<std::vector<HeadTemperatureFit>> FitHeadTemperatures(const MedusaHeadsWeights& heads,
                                                                    absl::Span<const float> classifier,
                                                                    const DistillSet& data, int max_rows, int threads,
                                                                    absl::Span<const float> embedding) {
  RETURN_IF_ERROR(CheckHeads(heads, classifier, embedding));
  RETURN_IF_ERROR(CheckData(data, heads.num_heads, heads.dim, heads.vocab, heads.kind));
  if (max_rows < 2) return absl::InvalidArgumentError(absl::StrCat("max_rows is ", max_rows, ", must be >= 2"));
  const int K = heads.num_heads, vocab = heads.vocab;
  const absl::Span<const int32_t> draft = heads.draft_vocab;
  std::vector<int32_t> position(vocab, -1);  // a token's index among the proposals
  for (size_t i = 0; i < draft.size(); ++i) position[draft[i]] = static_cast<int32_t>(i);
  if (draft.empty()) {
    for (int i = 0; i < vocab; ++i) position[i] = i;
  }
  const int width = draft.empty() ? vocab : static_cast<int>(draft.size());

  std::vector<int64_t> chosen;
  const int64_t stride = std::max<int64_t>(1, (data.rows() + max_rows - 1) / max_rows);
  for (int64_t r = 0; r < data.rows() && static_cast<int>(chosen.size()) < max_rows; r += stride) chosen.push_back(r);

  ThreadPool pool(ResolveThreads(threads));
  HeadBatch ws;
  ws.Allocate(K, heads.num_layers, heads.dim, vocab, kEvalBatch, pool.size(), /*training=*/false,
              /*vocab_rows=*/true, heads.kind);
  ws.embedding = embedding;
  std::vector<ProposalRows> fit(K), eval(K);
  for (int k = 0; k < K; ++k) fit[k].width = eval[k].width = width;
  for (size_t begin = 0; begin < chosen.size(); begin += kEvalBatch) {
    const int count = static_cast<int>(std::min<size_t>(kEvalBatch, chosen.size() - begin));
    Gather(data, chosen.data() + begin, count, ws);
    ForwardBlocks(heads, ws, pool);
    Project(heads, classifier, ws, ws.logits.data(), pool);
    for (int k = 0; k < K; ++k) {
      for (int i = 0; i < count; ++i) {
        const int m = k * count + i;
        if (ws.targets[m] < 0) continue;
        ProposalRows& to = (begin + i) % 2 == 0 ? fit[k] : eval[k];
        const float* row = ws.logits.data() + static_cast<size_t>(m) * vocab;
        if (draft.empty()) {
          to.logits.insert(to.logits.end(), row, row + vocab);
        } else {
          for (int32_t id : draft) to.logits.push_back(row[id]);
        }
        to.target.push_back(position[ws.targets[m]]);
      }
    }
  }
  std::vector<HeadTemperatureFit> fits(K);
  for (int k = 0; k < K; ++k) {
    HeadTemperatureFit& f = fits[k];
    f.fit_rows = fit[k].rows();
    f.eval_rows = eval[k].rows();
    const bool can_fit = std::any_of(fit[k].target.begin(), fit[k].target.end(), [](int32_t t) { return t >= 0; });
    f.temperature = can_fit ? FitTemperature(fit[k], pool) : 1.0;
    f.nll_before = MeanNll(eval[k], 1.0, pool);
    f.nll_after = MeanNll(eval[k], f.temperature, pool);
    f.ece_before = TopOneEce(eval[k], 1.0);
    f.ece_after = TopOneEce(eval[k], f.temperature);
  }
  return fits;
}

}  // namespace medusa
