#include "engine/train/head_batch.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "kernels/math/blas.h"
#include "kernels/math/vector_ops.h"

namespace medusa::train_internal {
namespace {

using math::ThreadPool;

float Sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }
float Silu(float z) { return z * Sigmoid(z); }
// d/dz z s(z) = s(z) (1 + z (1 - s(z)))
float SiluGrad(float z) {
  const float s = Sigmoid(z);
  return s * (1.0f + z * (1.0f - s));
}

// Hydra head k's first-block input rows: h, then the embeddings of next and targets 0 .. k-1
// (teacher forcing: the path the text took).
void FillPathInputs(int k, HeadBatch& ws) {
  const int rows = ws.rows, dim = ws.dim, width = (k + 2) * dim;
  float* u = ws.path_inputs[k].data();
  for (int i = 0; i < rows; ++i) {
    float* row = u + static_cast<size_t>(i) * width;
    std::copy_n(ws.hidden.data() + static_cast<size_t>(i) * dim, dim, row);
    for (int j = 0; j <= k; ++j) {
      const int32_t token = j == 0 ? ws.next[i] : ws.targets[static_cast<size_t>(j - 1) * rows + i];
      float* slot = row + static_cast<size_t>(j + 1) * dim;
      if (token < 0) {
        std::fill_n(slot, dim, 0.0f);  // past the text's end: this head has no target either
      } else {
        std::copy_n(ws.embedding.data() + static_cast<size_t>(token) * dim, dim, slot);
      }
    }
  }
}

// What block l of head k multiplies: its input rows, or a Hydra head's path inputs.
const float* BlockOperand(const MedusaHeadsWeights& w, int k, int l, HeadBatch& ws) {
  return w.kind == HeadKind::kHydra && l == 0 ? ws.path_inputs[k].data() : ws.Input(k, l);
}

// Head k's blocks on the batch: r <- r + SiLU(W x + b) (x = r, or a Hydra head's path input
// in its first block), keeping every input and pre-activation for the backward pass; the
// result goes to the stacked final states.
void ForwardHead(const MedusaHeadsWeights& w, int k, HeadBatch& ws) {
  const int rows = ws.rows, dim = ws.dim;
  const size_t n = static_cast<size_t>(rows) * dim;
  float* final_state = ws.Final(k);
  if (w.num_layers == 0) {
    std::copy_n(ws.hidden.data(), n, final_state);
    return;
  }
  std::copy_n(ws.hidden.data(), n, ws.Input(k, 0));
  if (w.kind == HeadKind::kHydra) FillPathInputs(k, ws);
  for (int l = 0; l < w.num_layers; ++l) {
    const MedusaResBlock& block = w.heads[k].blocks[l];
    const int inputs = w.BlockInputs(k, l);
    const float* in = ws.Input(k, l);
    float* z = ws.Pre(k, l);
    for (int i = 0; i < rows; ++i) std::copy(block.bias.begin(), block.bias.end(), z + static_cast<size_t>(i) * dim);
    math::Sgemm(false, true, rows, dim, inputs, 1.0f, BlockOperand(w, k, l, ws), inputs, block.weight.data(), inputs,
                1.0f, z, dim);
    float* out = l + 1 < w.num_layers ? ws.Input(k, l + 1) : final_state;
    for (size_t j = 0; j < n; ++j) out[j] = in[j] + Silu(z[j]);
  }
}

// Calls fn(projection [vocab, dim], begin, end) for the parts of the stacked rows [m0, m1)
// that share a projection: all of them for the shared classifier, one head's rows otherwise.
template <typename Fn>
void ForEachProjection(const MedusaHeadsWeights& w, absl::Span<const float> classifier, int rows,
                       int m0, int m1, Fn fn) {
  if (!w.has_projection()) {
    if (m0 < m1) fn(classifier.data(), m0, m1);
    return;
  }
  for (int m = m0; m < m1;) {
    const int k = m / rows;
    const int end = std::min(m1, (k + 1) * rows);
    fn(w.heads[k].projection.data(), m, end);
    m = end;
  }
}

// logits[:, v0:v1] = final P[v0:v1]^T for every stacked row.
void ProjectColumns(const MedusaHeadsWeights& w, absl::Span<const float> classifier, HeadBatch& ws, int v0,
                    int v1, float* logits) {
  if (v0 >= v1) return;
  const int dim = ws.dim, vocab = ws.vocab;
  ForEachProjection(w, classifier, ws.rows, 0, ws.heads * ws.rows, [&](const float* p, int begin, int end) {
    math::Sgemm(false, true, end - begin, v1 - v0, dim, 1.0f, ws.final_states.data() + static_cast<size_t>(begin) * dim,
                dim, p + static_cast<size_t>(v0) * dim, dim, 0.0f, logits + static_cast<size_t>(begin) * vocab + v0,
                vocab);
  });
}

// Head k's blocks backwards from d_final: dZ = dR' SiLU'(Z), dW = dZ^T X, db = sum dZ,
// dR = dR' + dZ W (not through the first block: h and the embeddings are not trained).
void BackwardHead(const MedusaHeadsWeights& w, int k, HeadBatch& ws, MedusaHeadsWeights& grads) {
  const int rows = ws.rows, dim = ws.dim;
  const size_t n = static_cast<size_t>(rows) * dim;
  if (w.num_layers == 0) return;
  float* g = ws.DState(k);
  std::copy_n(ws.d_final.data() + static_cast<size_t>(k) * n, n, g);
  float* dz = ws.DPre(k);
  for (int l = w.num_layers - 1; l >= 0; --l) {
    const float* z = ws.Pre(k, l);
    for (size_t j = 0; j < n; ++j) dz[j] = g[j] * SiluGrad(z[j]);
    MedusaResBlock& grad = grads.heads[k].blocks[l];
    const int inputs = w.BlockInputs(k, l);
    math::Sgemm(true, false, dim, inputs, rows, 1.0f, dz, dim, BlockOperand(w, k, l, ws), inputs, 0.0f,
                grad.weight.data(), inputs);
    std::fill(grad.bias.begin(), grad.bias.end(), 0.0f);
    for (int i = 0; i < rows; ++i) {
      const float* dz_row = dz + static_cast<size_t>(i) * dim;
      for (int d = 0; d < dim; ++d) grad.bias[d] += dz_row[d];
    }
    if (l > 0) {
      math::Sgemm(false, false, rows, dim, dim, 1.0f, dz, dim, w.heads[k].blocks[l].weight.data(), dim, 1.0f, g, dim);
    }
  }
}

}  // namespace

int ResolveThreads(int threads) {
  if (threads > 0) return threads;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

int SliceBegin(int n, int t, int threads) {
  return static_cast<int>(static_cast<int64_t>(n) * t / threads);
}

absl::Status CheckClassifier(absl::Span<const float> classifier, int vocab, int dim) {
  const size_t want = static_cast<size_t>(vocab) * static_cast<size_t>(dim);
  if (classifier.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "classifier has ", classifier.size(), " values, expected vocab ", vocab, " x dim ", dim,
        " = ", want));
  }
  return absl::OkStatus();
}

absl::Status CheckEmbedding(HeadKind kind, absl::Span<const float> embedding, int vocab, int dim) {
  if (kind != HeadKind::kHydra) return absl::OkStatus();
  const size_t want = static_cast<size_t>(vocab) * static_cast<size_t>(dim);
  if (embedding.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("Hydra heads need the model's embedding [vocab ", vocab, ", dim ",
                                                   dim, "]; it has ", embedding.size(), " values"));
  }
  return absl::OkStatus();
}

absl::Status CheckData(const DistillSet& data, int num_heads, int dim, int vocab, HeadKind kind) {
  if (data.hidden.empty()) {
    return absl::InvalidArgumentError("distill set is empty (no rows)");
  }
  RETURN_IF_ERROR(data.Validate(vocab));
  if (data.dim != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("distill set has dim ", data.dim, " but the model's dim is ", dim));
  }
  if (data.num_heads < num_heads) {
    return absl::InvalidArgumentError(absl::StrCat("distill set has targets for ", data.num_heads,
                                                   " heads, fewer than the ", num_heads, " heads"));
  }
  if (kind == HeadKind::kHydra && !data.has_next()) {
    return absl::InvalidArgumentError(
        "Hydra heads train on each row's next token and this distill set has none (made before they were kept: "
        "make the data afresh)");
  }
  return absl::OkStatus();
}

MedusaHeadsWeights ZeroHeads(int num_heads, int num_layers, int dim, int vocab, bool with_projection, HeadKind kind) {
  MedusaHeadsWeights w;
  w.kind = kind;
  w.num_heads = num_heads;
  w.num_layers = num_layers;
  w.dim = dim;
  w.vocab = vocab;
  w.heads.resize(num_heads);
  for (int k = 0; k < num_heads; ++k) {
    MedusaHead& head = w.heads[k];
    head.blocks.resize(num_layers);
    for (int l = 0; l < num_layers; ++l) {
      head.blocks[l].weight.assign(static_cast<size_t>(dim) * w.BlockInputs(k, l), 0.0f);
      head.blocks[l].bias.assign(dim, 0.0f);
    }
    if (with_projection) head.projection.assign(static_cast<size_t>(vocab) * dim, 0.0f);
  }
  return w;
}

void HeadBatch::Allocate(int h, int l, int d, int v, int cap, int threads, bool training, bool vocab_rows,
                         HeadKind kind, bool teacher) {
  heads = h, layers = l, dim = d, vocab = v, capacity = cap;
  const size_t rows_dim = static_cast<size_t>(cap) * d;
  const size_t stacked = static_cast<size_t>(h) * cap;
  hidden.resize(rows_dim);
  inputs.resize(static_cast<size_t>(h) * l * rows_dim);
  pre.resize(inputs.size());
  final_states.resize(stacked * d);
  if (vocab_rows) logits.resize(stacked * v);
  targets.resize(stacked);
  row_loss.resize(stacked);
  row_rank.resize(stacked);
  if (kind == HeadKind::kHydra) {
    next.resize(cap);
    path_inputs.resize(h);
    for (int k = 0; k < h; ++k) path_inputs[k].resize(rows_dim * (k + 2));
  }
  if (teacher) {
    teacher_states.resize(stacked * d);
    teacher_logits.resize(stacked * v);
    has_teacher.resize(stacked);
  }
  if (training) {
    d_final.resize(stacked * d);
    d_partial.resize(static_cast<size_t>(threads - 1) * stacked * d);
    d_state.resize(static_cast<size_t>(h) * rows_dim);
    d_pre.resize(d_state.size());
  }
}

void Gather(const DistillSet& data, const int64_t* rows, int count, HeadBatch& ws) {
  ws.rows = count;
  for (int i = 0; i < count; ++i) {
    absl::Span<const float> h = data.Hidden(static_cast<int>(rows[i]));
    std::copy(h.begin(), h.end(), ws.hidden.begin() + static_cast<size_t>(i) * ws.dim);
    absl::Span<const int32_t> t = data.Targets(static_cast<int>(rows[i]));
    for (int k = 0; k < ws.heads; ++k) ws.targets[static_cast<size_t>(k) * count + i] = t[k];
    if (!ws.next.empty()) ws.next[i] = data.next[rows[i]];
  }
}

void GatherTeacher(const DistillSet& data, const int64_t* rows, int count, HeadBatch& ws) {
  for (int k = 0; k < ws.heads; ++k) {
    for (int i = 0; i < count; ++i) {
      const size_t m = static_cast<size_t>(k) * count + i;
      const int ahead = data.RowAhead(static_cast<int>(rows[i]), k + 1);
      ws.has_teacher[m] = ahead >= 0;
      float* state = ws.teacher_states.data() + m * ws.dim;
      if (ahead < 0) {
        std::fill_n(state, ws.dim, 0.0f);
      } else {
        absl::Span<const float> h = data.Hidden(ahead);
        std::copy(h.begin(), h.end(), state);
      }
    }
  }
}

void ProjectTeacher(absl::Span<const float> projection, HeadBatch& ws, ThreadPool& pool) {
  const int dim = ws.dim, vocab = ws.vocab, stacked = ws.heads * ws.rows;
  pool.Run(pool.size(), [&](int t, int n) {
    const int v0 = SliceBegin(vocab, t, n), v1 = SliceBegin(vocab, t + 1, n);
    if (v0 >= v1) return;
    math::Sgemm(false, true, stacked, v1 - v0, dim, 1.0f, ws.teacher_states.data(), dim,
                projection.data() + static_cast<size_t>(v0) * dim, dim, 0.0f, ws.teacher_logits.data() + v0, vocab);
  });
}

void ForwardBlocks(const MedusaHeadsWeights& w, HeadBatch& ws, ThreadPool& pool) {
  pool.Run(std::min(pool.size(), w.num_heads), [&](int t, int n) {
    for (int k = t; k < w.num_heads; k += n) ForwardHead(w, k, ws);
  });
}

void Project(const MedusaHeadsWeights& w, absl::Span<const float> classifier, HeadBatch& ws, float* logits,
             ThreadPool& pool) {
  pool.Run(pool.size(), [&](int t, int n) {
    ProjectColumns(w, classifier, ws, SliceBegin(ws.vocab, t, n), SliceBegin(ws.vocab, t + 1, n), logits);
  });
}

void BackpropProjection(const MedusaHeadsWeights& w, absl::Span<const float> classifier, HeadBatch& ws,
                        ThreadPool& pool) {
  const int dim = ws.dim, vocab = ws.vocab;
  const size_t stacked_dim = static_cast<size_t>(ws.heads) * ws.rows * dim;
  const int threads = pool.size();
  pool.Run(threads, [&](int t, int n) {
    const int v0 = SliceBegin(vocab, t, n), v1 = SliceBegin(vocab, t + 1, n);
    float* partial = t == 0 ? ws.d_final.data() : ws.d_partial.data() + (t - 1) * stacked_dim;
    if (v0 >= v1) {
      std::fill_n(partial, stacked_dim, 0.0f);
      return;
    }
    ForEachProjection(w, classifier, ws.rows, 0, ws.heads * ws.rows, [&](const float* p, int begin, int end) {
      math::Sgemm(false, false, end - begin, dim, v1 - v0, 1.0f,
                  ws.logits.data() + static_cast<size_t>(begin) * vocab + v0, vocab, p + static_cast<size_t>(v0) * dim,
                  dim, 0.0f, partial + static_cast<size_t>(begin) * dim, dim);
    });
  });
  if (threads == 1) return;
  pool.Run(threads, [&](int t, int n) {
    const size_t j0 = stacked_dim * t / n, j1 = stacked_dim * (t + 1) / n;
    for (int part = 1; part < threads; ++part) {
      const float* add = ws.d_partial.data() + (part - 1) * stacked_dim;
      for (size_t j = j0; j < j1; ++j) ws.d_final[j] += add[j];
    }
  });
}

double LossRow(float* row, int vocab, int target, float scale, bool* top1, float* teacher, float teacher_weight) {
  if (target < 0) {
    std::fill_n(row, vocab, 0.0f);
    *top1 = false;
    return 0.0;
  }
  const float max = math::Max(row, vocab);
  const float target_logit = row[target];
  *top1 = target_logit >= max;
  const double hard = teacher != nullptr ? 1.0 - teacher_weight : 1.0;
  // CE = log sum exp(z) - sum_v q_v z_v, with q the target distribution.
  double expected_logit = hard * target_logit;
  if (teacher != nullptr) {
    const float teacher_sum = math::ExpShiftedSum(teacher, vocab, math::Max(teacher, vocab));
    math::Scale(1.0f / teacher_sum, teacher, vocab);
    double soft = 0.0;
    for (int j = 0; j < vocab; ++j) soft += static_cast<double>(teacher[j]) * row[j];
    expected_logit += teacher_weight * soft;
  }
  const float sum = math::ExpShiftedSum(row, vocab, max);
  math::Scale(scale / sum, row, vocab);
  // dCE/dz = softmax(z) - q.
  if (teacher != nullptr) math::Axpy(-scale * teacher_weight, teacher, row, vocab);
  row[target] -= static_cast<float>(scale * hard);
  return std::log(static_cast<double>(sum)) + static_cast<double>(max) - expected_logit;
}

int32_t RankOf(const float* row, int vocab, int target) {
  const float t = row[target];
  int32_t above = 0;
  for (int j = 0; j < vocab; ++j) above += row[j] > t ? 1 : 0;
  return above;
}

int32_t DraftRankOf(const float* row, absl::Span<const int32_t> draft, const std::vector<char>& in_draft,
                    int target, int32_t miss) {
  if (!in_draft[target]) return miss;
  const float t = row[target];
  int32_t above = 0;
  for (int32_t id : draft) above += row[id] > t ? 1 : 0;
  return above;
}

void ProjectionGradients(HeadBatch& ws, MedusaHeadsWeights& grads, ThreadPool& pool) {
  const int rows = ws.rows, dim = ws.dim, vocab = ws.vocab;
  pool.Run(pool.size(), [&](int t, int n) {
    const int v0 = SliceBegin(vocab, t, n), v1 = SliceBegin(vocab, t + 1, n);
    if (v0 >= v1) return;
    for (int k = 0; k < ws.heads; ++k) {
      math::Sgemm(true, false, v1 - v0, dim, rows, 1.0f, ws.logits.data() + static_cast<size_t>(k) * rows * vocab + v0,
                  vocab, ws.Final(k), dim, 0.0f, grads.heads[k].projection.data() + static_cast<size_t>(v0) * dim, dim);
    }
  });
}

void BackwardBlocks(const MedusaHeadsWeights& w, HeadBatch& ws, MedusaHeadsWeights& grads, ThreadPool& pool) {
  pool.Run(std::min(pool.size(), w.num_heads), [&](int t, int n) {
    for (int k = t; k < w.num_heads; k += n) BackwardHead(w, k, ws, grads);
  });
}

}  // namespace medusa::train_internal
