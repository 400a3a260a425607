#include "engine/train/heads_trainer.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/safetensors.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/vector_ops.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

using kernels::cpu::ThreadPool;

constexpr char kStateKey[] = "medusa_trainer_state";
constexpr char kStateFormat[] = "medusa-heads-trainer/1";
constexpr char kHeadPrefix[] = "medusa_head.";  // LoadMedusaHeads reads a combined file by it
constexpr char kExpAvgPrefix[] = "optimizer.exp_avg.";
constexpr char kExpAvgSqPrefix[] = "optimizer.exp_avg_sq.";
// Gradient norms and updates run over chunks of this many values: the chunking, not the
// thread count, fixes the order of the norm's sum.
constexpr size_t kChunk = size_t{1} << 16;
// Rows per forward pass in evaluation.
constexpr int kEvalBatch = 64;

int ResolveThreads(int threads) {
  if (threads > 0) return threads;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

inline float Sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }
inline float Silu(float z) { return z * Sigmoid(z); }
// d/dz z s(z) = s(z) (1 + z (1 - s(z)))
inline float SiluGrad(float z) {
  const float s = Sigmoid(z);
  return s * (1.0f + z * (1.0f - s));
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

// Checks `data` against heads of this shape: InvalidArgument naming the mismatch.
absl::Status CheckData(const DistillSet& data, int num_heads, int dim, int vocab) {
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
  return absl::OkStatus();
}

MedusaHeadsWeights ZeroHeads(int num_heads, int num_layers, int dim, int vocab, bool with_projection) {
  MedusaHeadsWeights w;
  w.num_heads = num_heads;
  w.num_layers = num_layers;
  w.dim = dim;
  w.vocab = vocab;
  w.heads.resize(num_heads);
  for (MedusaHead& head : w.heads) {
    head.blocks.resize(num_layers);
    for (MedusaResBlock& block : head.blocks) {
      block.weight.assign(static_cast<size_t>(dim) * dim, 0.0f);
      block.bias.assign(dim, 0.0f);
    }
    if (with_projection) head.projection.assign(static_cast<size_t>(vocab) * dim, 0.0f);
  }
  return w;
}

// ------------------------------------------------------------------ batch math

// Buffers for one batch of up to `capacity` rows through every head. The final states
// of all heads are one stacked matrix [heads * rows, dim] (head k's rows from k * rows), so
// a shared classifier projects the whole batch in one product.
struct Workspace {
  int heads = 0, layers = 0, dim = 0, vocab = 0, capacity = 0;
  int rows = 0;  // of the current batch

  std::vector<float> hidden;        // [capacity, dim]
  std::vector<float> inputs;        // [heads][layers][capacity, dim]: block l's input
  std::vector<float> pre;           // [heads][layers][capacity, dim]: W r + b
  std::vector<float> final_states;  // [heads * rows, dim]
  std::vector<float> logits;        // [heads * rows, vocab]; dLogits after the loss sweep
  std::vector<float> d_final;       // [heads * rows, dim]
  std::vector<float> d_partial;     // [threads - 1][heads * rows, dim]: BackpropProjection's other slices
  std::vector<float> d_state;       // [heads][capacity, dim]
  std::vector<float> d_pre;         // [heads][capacity, dim]
  std::vector<int32_t> targets;     // [heads * rows]
  std::vector<double> row_loss;     // [heads * rows]: cross-entropy (0 for no target)
  std::vector<int32_t> row_rank;    // [heads * rows]: logits above the target's

  // `vocab_rows`: whether logits get a buffer here (not when they go to the caller's).
  void Allocate(int h, int l, int d, int v, int cap, int threads, bool training, bool vocab_rows = true) {
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
    if (training) {
      d_final.resize(stacked * d);
      d_partial.resize(static_cast<size_t>(threads - 1) * stacked * d);
      d_state.resize(static_cast<size_t>(h) * rows_dim);
      d_pre.resize(d_state.size());
    }
  }
  size_t Block(int k, int l) const { return (static_cast<size_t>(k) * layers + l) * capacity * dim; }
  float* Input(int k, int l) { return inputs.data() + Block(k, l); }
  float* Pre(int k, int l) { return pre.data() + Block(k, l); }
  float* Final(int k) { return final_states.data() + static_cast<size_t>(k) * rows * dim; }
  float* DState(int k) { return d_state.data() + static_cast<size_t>(k) * capacity * dim; }
  float* DPre(int k) { return d_pre.data() + static_cast<size_t>(k) * capacity * dim; }
};

// Copies the batch's hidden states and head-major targets into the workspace.
void Gather(const DistillSet& data, const int64_t* rows, int count, Workspace& ws) {
  ws.rows = count;
  for (int i = 0; i < count; ++i) {
    absl::Span<const float> h = data.Hidden(static_cast<int>(rows[i]));
    std::copy(h.begin(), h.end(), ws.hidden.begin() + static_cast<size_t>(i) * ws.dim);
    absl::Span<const int32_t> t = data.Targets(static_cast<int>(rows[i]));
    for (int k = 0; k < ws.heads; ++k) ws.targets[static_cast<size_t>(k) * count + i] = t[k];
  }
}

// Head k's blocks on the batch: r <- r + SiLU(W r + b), keeping every input and
// pre-activation for the backward pass; the result goes to the stacked final states.
void ForwardHead(const MedusaHeadsWeights& w, int k, Workspace& ws) {
  const int rows = ws.rows, dim = ws.dim;
  const size_t n = static_cast<size_t>(rows) * dim;
  float* final_state = ws.Final(k);
  if (w.num_layers == 0) {
    std::copy_n(ws.hidden.data(), n, final_state);
    return;
  }
  std::copy_n(ws.hidden.data(), n, ws.Input(k, 0));
  for (int l = 0; l < w.num_layers; ++l) {
    const MedusaResBlock& block = w.heads[k].blocks[l];
    const float* in = ws.Input(k, l);
    float* z = ws.Pre(k, l);
    for (int i = 0; i < rows; ++i) std::copy(block.bias.begin(), block.bias.end(), z + static_cast<size_t>(i) * dim);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, dim, dim, 1.0f, in, dim,
                block.weight.data(), dim, 1.0f, z, dim);
    float* out = l + 1 < w.num_layers ? ws.Input(k, l + 1) : final_state;
    for (size_t j = 0; j < n; ++j) out[j] = in[j] + Silu(z[j]);
  }
}

void ForwardBlocks(const MedusaHeadsWeights& w, Workspace& ws, ThreadPool& pool) {
  pool.Run(std::min(pool.size(), w.num_heads), [&](int t, int n) {
    for (int k = t; k < w.num_heads; k += n) ForwardHead(w, k, ws);
  });
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

// The big products are split across threads by vocabulary columns, not by rows: sgemm
// packs its B operand (here the [vocab, dim] projection, 113 MB for SmolLM2) on every call,
// and a column split packs each part of it once instead of once per thread.
int SliceBegin(int n, int t, int threads) {
  return static_cast<int>(static_cast<int64_t>(n) * t / threads);
}

// logits[:, v0:v1] = final P[v0:v1]^T for every stacked row.
void ProjectColumns(const MedusaHeadsWeights& w, absl::Span<const float> classifier, Workspace& ws, int v0,
                    int v1, float* logits) {
  if (v0 >= v1) return;
  const int dim = ws.dim, vocab = ws.vocab;
  ForEachProjection(w, classifier, ws.rows, 0, ws.heads * ws.rows, [&](const float* p, int begin, int end) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, end - begin, v1 - v0, dim, 1.0f,
                ws.final_states.data() + static_cast<size_t>(begin) * dim, dim, p + static_cast<size_t>(v0) * dim,
                dim, 0.0f, logits + static_cast<size_t>(begin) * vocab + v0, vocab);
  });
}

// Every head's logits for the workspace's batch (after ForwardBlocks) into `logits`
// [heads * rows, vocab].
void Project(const MedusaHeadsWeights& w, absl::Span<const float> classifier, Workspace& ws, float* logits,
             ThreadPool& pool) {
  pool.Run(pool.size(), [&](int t, int n) {
    ProjectColumns(w, classifier, ws, SliceBegin(ws.vocab, t, n), SliceBegin(ws.vocab, t + 1, n), logits);
  });
}

// d_final = dLogits P: thread t takes the vocabulary slice t of the sum into its own partial
// [heads * rows, dim]; the partials are then added in thread order (a fixed order).
void BackpropProjection(const MedusaHeadsWeights& w, absl::Span<const float> classifier, Workspace& ws,
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
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, end - begin, dim, v1 - v0, 1.0f,
                  ws.logits.data() + static_cast<size_t>(begin) * vocab + v0, vocab,
                  p + static_cast<size_t>(v0) * dim, dim, 0.0f, partial + static_cast<size_t>(begin) * dim, dim);
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

// One row's softmax, cross-entropy and dLogits, in place: the row (192 KiB for a 49152-token
// vocabulary) stays in L2 across the max, exp-and-sum and scale sweeps. `scale` is the row's
// weight in the loss (lambda_k / valid targets of head k). Returns the cross-entropy;
// `top1` says whether no logit exceeds the target's.
double LossRow(float* row, int vocab, int target, float scale, bool* top1) {
  if (target < 0) {
    std::fill_n(row, vocab, 0.0f);
    *top1 = false;
    return 0.0;
  }
  const float max = kernels::cpu::Max(row, vocab);
  const float target_logit = row[target];
  *top1 = target_logit >= max;
  const float sum = kernels::cpu::ExpShiftedSum(row, vocab, max);
  kernels::cpu::Scale(scale / sum, row, vocab);
  row[target] -= scale;
  return std::log(static_cast<double>(sum)) + static_cast<double>(max) - target_logit;
}

// Logits strictly above the target's (0: the target is an argmax).
int32_t RankOf(const float* row, int vocab, int target) {
  const float t = row[target];
  int32_t above = 0;
  for (int j = 0; j < vocab; ++j) above += row[j] > t ? 1 : 0;
  return above;
}

// The target's rank among the draft vocabulary's tokens (those whose logits are strictly
// above it), or `miss` when the heads cannot propose the target at all.
int32_t DraftRankOf(const float* row, absl::Span<const int32_t> draft, const std::vector<char>& in_draft,
                    int target, int32_t miss) {
  if (!in_draft[target]) return miss;
  const float t = row[target];
  int32_t above = 0;
  for (int32_t id : draft) above += row[id] > t ? 1 : 0;
  return above;
}

// dP_k = dLogits_k^T final_k for every head with its own projection, vocabulary rows
// split across the threads.
void ProjectionGradients(Workspace& ws, MedusaHeadsWeights& grads, ThreadPool& pool) {
  const int rows = ws.rows, dim = ws.dim, vocab = ws.vocab;
  pool.Run(pool.size(), [&](int t, int n) {
    const int v0 = SliceBegin(vocab, t, n), v1 = SliceBegin(vocab, t + 1, n);
    if (v0 >= v1) return;
    for (int k = 0; k < ws.heads; ++k) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, v1 - v0, dim, rows, 1.0f,
                  ws.logits.data() + static_cast<size_t>(k) * rows * vocab + v0, vocab, ws.Final(k), dim,
                  0.0f, grads.heads[k].projection.data() + static_cast<size_t>(v0) * dim, dim);
    }
  });
}

// Head k's blocks backwards from d_final: dZ = dR' SiLU'(Z), dW = dZ^T R, db = sum dZ,
// dR = dR' + dZ W.
void BackwardHead(const MedusaHeadsWeights& w, int k, Workspace& ws, MedusaHeadsWeights& grads) {
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
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dim, dim, rows, 1.0f, dz, dim, ws.Input(k, l),
                dim, 0.0f, grad.weight.data(), dim);
    std::fill(grad.bias.begin(), grad.bias.end(), 0.0f);
    for (int i = 0; i < rows; ++i) {
      const float* dz_row = dz + static_cast<size_t>(i) * dim;
      for (int d = 0; d < dim; ++d) grad.bias[d] += dz_row[d];
    }
    if (l > 0) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dim, dim, 1.0f, dz, dim,
                  w.heads[k].blocks[l].weight.data(), dim, 1.0f, g, dim);
    }
  }
}

// ------------------------------------------------------------------ fingerprints

// A 64-bit hash of bytes (word-wise multiply-xorshift): detects a checkpoint made on other
// data or another classifier. Stable across runs and machines of the same endianness.
uint64_t Fingerprint(const void* data, size_t bytes, uint64_t h) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  const auto* p = static_cast<const unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t word;
    std::memcpy(&word, p + i, 8);
    h = (h ^ word) * kMul;
    h ^= h >> 31;
  }
  for (; i < bytes; ++i) h = ((h ^ p[i]) * kMul) ^ (h >> 29);
  return h ^ (bytes * kMul);
}

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

std::string DataFingerprint(const DistillSet& data) {
  const int64_t shape[3] = {data.dim, data.num_heads, data.rows()};
  uint64_t h = Fingerprint(shape, sizeof(shape), 1);
  h = Fingerprint(data.hidden.data(), data.hidden.size() * sizeof(float), h);
  h = Fingerprint(data.targets.data(), data.targets.size() * sizeof(int32_t), h);
  return Hex(h);
}

// The options a checkpoint must share with the run resuming it (threads may differ; the
// continuation is bit-identical only with the same count).
nlohmann::json OptionsJson(const TrainerOptions& o) {
  return {{"num_heads", o.num_heads},       {"num_layers", o.num_layers},
          {"share_lm_head", o.share_lm_head}, {"batch_size", o.batch_size},
          {"epochs", o.epochs},             {"lr", o.lr},
          {"weight_decay", o.weight_decay}, {"warmup_steps", o.warmup_steps},
          {"min_lr_ratio", o.min_lr_ratio}, {"grad_clip", o.grad_clip},
          {"seed", o.seed},                 {"loss_decay", o.loss_decay},
          {"adam_beta1", o.adam_beta1},     {"adam_beta2", o.adam_beta2},
          {"adam_eps", o.adam_eps}};
}

// One trained tensor with its gradient and AdamW moments.
struct ParamTensor {
  std::string name;  // in the heads layout ("{head}.{layer}.linear.weight", ...)
  std::vector<int64_t> shape;
  float* value;
  float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  size_t size;
  bool decay;  // weight decay applies (weights and projections, not biases)
};

struct Chunk {
  int param;
  size_t begin, end;
};

}  // namespace

// ------------------------------------------------------------------ options, schedule

absl::Status TrainerOptions::Validate() const {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("trainer options: ", what));
  };
  if (num_heads < 1) return bad(absl::StrCat("num_heads is ", num_heads, ", must be >= 1"));
  if (num_layers < 0) return bad(absl::StrCat("num_layers is ", num_layers, ", must be >= 0"));
  if (num_layers == 0 && share_lm_head) {
    return bad("num_layers is 0 with share_lm_head: the heads would have nothing to train");
  }
  if (batch_size < 1) return bad(absl::StrCat("batch_size is ", batch_size, ", must be >= 1"));
  if (epochs < 1) return bad(absl::StrCat("epochs is ", epochs, ", must be >= 1"));
  if (!(lr > 0.0f) || !std::isfinite(lr)) return bad(absl::StrCat("lr is ", lr, ", must be > 0"));
  if (!(weight_decay >= 0.0f)) return bad(absl::StrCat("weight_decay is ", weight_decay, ", must be >= 0"));
  if (warmup_steps < -1) return bad(absl::StrCat("warmup_steps is ", warmup_steps, ", must be >= -1"));
  if (!(min_lr_ratio >= 0.0f && min_lr_ratio <= 1.0f)) {
    return bad(absl::StrCat("min_lr_ratio is ", min_lr_ratio, ", must be in [0, 1]"));
  }
  if (!(loss_decay > 0.0f)) return bad(absl::StrCat("loss_decay is ", loss_decay, ", must be > 0"));
  if (!(adam_beta1 >= 0.0f && adam_beta1 < 1.0f) || !(adam_beta2 >= 0.0f && adam_beta2 < 1.0f)) {
    return bad(absl::StrCat("adam betas are ", adam_beta1, " and ", adam_beta2, ", must be in [0, 1)"));
  }
  if (!(adam_eps > 0.0f)) return bad(absl::StrCat("adam_eps is ", adam_eps, ", must be > 0"));
  if (threads < 0) return bad(absl::StrCat("threads is ", threads, ", must be >= 0"));
  return absl::OkStatus();
}

int64_t WarmupSteps(const TrainerOptions& options, int64_t total_steps) {
  if (options.warmup_steps >= 0) return std::min<int64_t>(options.warmup_steps, total_steps);
  return (total_steps + 9) / 10;
}

double LearningRate(const TrainerOptions& options, int64_t step, int64_t total_steps) {
  const double peak = options.lr;
  const int64_t warmup = WarmupSteps(options, total_steps);
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t decay_steps = total_steps - warmup;
  const double progress =
      decay_steps > 1 ? std::min(1.0, static_cast<double>(step - warmup) / (decay_steps - 1)) : 0.0;
  const double floor = peak * options.min_lr_ratio;
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

// ------------------------------------------------------------------ trainer

struct HeadsTrainer::Impl {
  TrainerOptions options;
  ModelConfig config;
  absl::Span<const float> classifier;
  std::unique_ptr<ThreadPool> pool;

  MedusaHeadsWeights heads, grads, exp_avg, exp_avg_sq;
  std::vector<ParamTensor> params;
  std::vector<Chunk> chunks;
  std::vector<double> chunk_sums;
  int64_t step = 0;
  Workspace ws;

  // The last batch, per head: loss weight per valid target, summed cross-entropy, valid
  // targets, argmax hits.
  std::vector<float> batch_scale;
  std::vector<double> batch_loss_sum;
  std::vector<int64_t> batch_valid, batch_hits;

  int K() const { return options.num_heads; }

  void ResetOptimizer() {
    const bool own = !options.share_lm_head;
    grads = ZeroHeads(K(), options.num_layers, config.dim, config.vocab_size, own);
    exp_avg = grads;
    exp_avg_sq = grads;
    step = 0;
    params.clear();
    auto add = [&](std::string name, std::vector<int64_t> shape, std::vector<float>& value,
                   std::vector<float>& grad, std::vector<float>& m, std::vector<float>& v, bool decay) {
      params.push_back({std::move(name), std::move(shape), value.data(), grad.data(), m.data(), v.data(),
                        value.size(), decay});
    };
    const int64_t dim = config.dim;
    for (int k = 0; k < K(); ++k) {
      for (int l = 0; l < options.num_layers; ++l) {
        add(absl::StrCat(k, ".", l, ".linear.weight"), {dim, dim}, heads.heads[k].blocks[l].weight,
            grads.heads[k].blocks[l].weight, exp_avg.heads[k].blocks[l].weight,
            exp_avg_sq.heads[k].blocks[l].weight, true);
        add(absl::StrCat(k, ".", l, ".linear.bias"), {dim}, heads.heads[k].blocks[l].bias,
            grads.heads[k].blocks[l].bias, exp_avg.heads[k].blocks[l].bias,
            exp_avg_sq.heads[k].blocks[l].bias, false);
      }
      if (own) {
        add(absl::StrCat(k, ".", options.num_layers, ".weight"), {config.vocab_size, dim},
            heads.heads[k].projection, grads.heads[k].projection, exp_avg.heads[k].projection,
            exp_avg_sq.heads[k].projection, true);
      }
    }
    chunks.clear();
    for (int p = 0; p < static_cast<int>(params.size()); ++p) {
      for (size_t b = 0; b < params[p].size; b += kChunk) {
        chunks.push_back({p, b, std::min(params[p].size, b + kChunk)});
      }
    }
    chunk_sums.assign(chunks.size(), 0.0);
  }

  // Loss and gradients of one batch (rows already checked).
  double RunBatch(const DistillSet& data, const int64_t* rows, int count) {
    Gather(data, rows, count, ws);
    std::vector<float>& scale = batch_scale;
    scale.assign(K(), 0.0f);
    batch_valid.assign(K(), 0);
    batch_hits.assign(K(), 0);
    batch_loss_sum.assign(K(), 0.0);
    for (int k = 0; k < K(); ++k) {
      for (int i = 0; i < count; ++i) batch_valid[k] += ws.targets[static_cast<size_t>(k) * count + i] >= 0;
      scale[k] = batch_valid[k] > 0
                     ? static_cast<float>(std::pow(static_cast<double>(options.loss_decay), k + 1) /
                                          batch_valid[k])
                     : 0.0f;
    }
    ForwardBlocks(heads, ws, *pool);
    Project(heads, classifier, ws, ws.logits.data(), *pool);
    const int stacked = K() * count;
    const int vocab = config.vocab_size;
    pool->Run(pool->size(), [&](int t, int n) {
      for (int m = SliceBegin(stacked, t, n); m < SliceBegin(stacked, t + 1, n); ++m) {
        bool top1 = false;
        ws.row_loss[m] = LossRow(ws.logits.data() + static_cast<size_t>(m) * vocab, vocab, ws.targets[m],
                                 scale[m / count], &top1);
        ws.row_rank[m] = top1 ? 0 : 1;  // only top-1 is tracked while training
      }
    });
    BackpropProjection(heads, classifier, ws, *pool);
    if (heads.has_projection()) ProjectionGradients(ws, grads, *pool);
    pool->Run(std::min(pool->size(), K()), [&](int t, int n) {
      for (int k = t; k < K(); k += n) BackwardHead(heads, k, ws, grads);
    });
    double loss = 0.0;
    for (int k = 0; k < K(); ++k) {
      for (int i = 0; i < count; ++i) {
        const size_t m = static_cast<size_t>(k) * count + i;
        batch_loss_sum[k] += ws.row_loss[m];
        batch_hits[k] += ws.row_rank[m] == 0;
      }
      loss += static_cast<double>(scale[k]) * batch_loss_sum[k];
    }
    return loss;
  }

  double GradientNorm() {
    pool->ParallelFor(pool->size(), static_cast<int>(chunks.size()), [&](int c, int) {
      const Chunk& chunk = chunks[c];
      const float* g = params[chunk.param].grad;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (size_t j = chunk.begin; j < chunk.end; ++j) sum += static_cast<double>(g[j]) * g[j];
      chunk_sums[c] = sum;
    });
    double total = 0.0;
    for (double s : chunk_sums) total += s;
    return std::sqrt(total);
  }

  // Clips the gradients by global norm and takes one AdamW step (PyTorch's formulation).
  void ApplyUpdate(int64_t total_steps) {
    const double norm = GradientNorm();
    const float clip = options.grad_clip > 0.0f && norm > options.grad_clip
                           ? static_cast<float>(options.grad_clip / (norm + 1e-6))
                           : 1.0f;
    const double lr = LearningRate(options, step, total_steps);
    const double t = static_cast<double>(step + 1);
    const double bias1 = 1.0 - std::pow(static_cast<double>(options.adam_beta1), t);
    const double bias2 = 1.0 - std::pow(static_cast<double>(options.adam_beta2), t);
    const float step_size = static_cast<float>(lr / bias1);
    const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
    const float b1 = options.adam_beta1, b2 = options.adam_beta2, eps = options.adam_eps;
    const float decay = static_cast<float>(1.0 - lr * options.weight_decay);
    pool->ParallelFor(pool->size(), static_cast<int>(chunks.size()), [&](int c, int) {
      const Chunk& chunk = chunks[c];
      const ParamTensor& p = params[chunk.param];
      const float keep = p.decay ? decay : 1.0f;
      for (size_t j = chunk.begin; j < chunk.end; ++j) {
        const float g = p.grad[j] * clip;
        const float m = b1 * p.exp_avg[j] + (1.0f - b1) * g;
        const float v = b2 * p.exp_avg_sq[j] + (1.0f - b2) * g * g;
        p.exp_avg[j] = m;
        p.exp_avg_sq[j] = v;
        p.value[j] = p.value[j] * keep - step_size * m / (std::sqrt(v) * inv_sqrt_bias2 + eps);
      }
    });
    ++step;
  }

  // --------------------------------------------------------------- checkpoints

  nlohmann::json State(const std::string& data_fingerprint, const std::string& classifier_fingerprint,
                       int64_t total_steps, int rows) const {
    return {{"format", kStateFormat},
            {"step", step},
            {"total_steps", total_steps},
            {"options", OptionsJson(options)},
            {"data", {{"rows", rows}, {"fingerprint", data_fingerprint}}},
            {"classifier", {{"vocab", config.vocab_size}, {"dim", config.dim},
                            {"fingerprint", classifier_fingerprint}}}};
  }

  absl::Status SaveCheckpoint(const std::string& path, const nlohmann::json& state) const {
    std::vector<safetensors::TensorToWrite> tensors;
    tensors.reserve(params.size() * 3);
    for (const ParamTensor& p : params) {
      tensors.push_back({kHeadPrefix + p.name, p.shape, absl::MakeConstSpan(p.value, p.size)});
      tensors.push_back({kExpAvgPrefix + p.name, p.shape, absl::MakeConstSpan(p.exp_avg, p.size)});
      tensors.push_back({kExpAvgSqPrefix + p.name, p.shape, absl::MakeConstSpan(p.exp_avg_sq, p.size)});
    }
    nlohmann::json meta = {{kStateKey, state.dump()},
                           {"medusa_num_heads", std::to_string(K())},
                           {"medusa_num_layers", std::to_string(options.num_layers)}};
    const std::string temp = path + ".tmp";
    RETURN_IF_ERROR(safetensors::WriteFile(temp, tensors, meta));
    std::error_code error;
    std::filesystem::rename(temp, path, error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot move checkpoint '", temp, "' to '", path,
                                              "': ", error.message()));
    }
    return absl::OkStatus();
  }

  // Checks a checkpoint's state against this run: FailedPrecondition naming what differs.
  absl::Status CheckState(const std::string& path, const nlohmann::json& saved,
                          const nlohmann::json& now) const {
    auto mismatch = [&](const std::string& what) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint '", path, "' does not match this run: ", what,
          "; remove it or run with what it was made with"));
    };
    if (saved.value("format", "") != kStateFormat) {
      return mismatch(absl::StrCat("format '", saved.value("format", ""), "', expected '", kStateFormat, "'"));
    }
    for (const auto& [key, value] : now["options"].items()) {
      if (!saved["options"].contains(key) || saved["options"][key] != value) {
        return mismatch(absl::StrCat("it was written with ", key, " = ",
                                     saved["options"].value(key, nlohmann::json()).dump(),
                                     ", this run has ", value.dump()));
      }
    }
    if (saved["classifier"] != now["classifier"]) {
      return mismatch(absl::StrCat("it was trained against classifier ", saved["classifier"].dump(),
                                   ", this run's is ", now["classifier"].dump()));
    }
    if (saved["data"] != now["data"]) {
      return mismatch(absl::StrCat("it was trained on data ", saved["data"].dump(), ", this run's is ",
                                   now["data"].dump()));
    }
    if (saved["total_steps"] != now["total_steps"] || !saved["step"].is_number_integer() ||
        saved["step"].get<int64_t>() < 0 || saved["step"].get<int64_t>() > now["total_steps"].get<int64_t>()) {
      return mismatch(absl::StrCat("it is at step ", saved["step"].dump(), " of ", saved["total_steps"].dump(),
                                   ", this run has ", now["total_steps"].dump(), " steps"));
    }
    return absl::OkStatus();
  }

  absl::Status LoadCheckpoint(const std::string& path, const nlohmann::json& now) {
    ASSIGN_OR_RETURN(std::unique_ptr<safetensors::File> file, safetensors::File::Open(path));
    const nlohmann::json& meta = file->metadata();
    if (!meta.contains(kStateKey) || !meta[kStateKey].is_string()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", path, "' is not a trainer checkpoint (no '", kStateKey, "' in its metadata)"));
    }
    nlohmann::json saved = nlohmann::json::parse(meta[kStateKey].get<std::string>(), nullptr, false);
    if (saved.is_discarded() || !saved.is_object()) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint '", path, "': its '", kStateKey, "' is not a JSON object"));
    }
    RETURN_IF_ERROR(CheckState(path, saved, now));
    ASSIGN_OR_RETURN(MedusaHeadsWeights loaded, LoadMedusaHeads(*file, config));
    if (loaded.num_heads != K() || loaded.num_layers != options.num_layers ||
        loaded.has_projection() == options.share_lm_head) {
      return absl::FailedPreconditionError(
          absl::StrCat("checkpoint '", path, "' holds ", loaded.num_heads, " heads of ", loaded.num_layers, " blocks",
                       loaded.has_projection() ? " with" : " without", " own projections; the options want ", K(),
                       " of ", options.num_layers, options.share_lm_head ? " without" : " with"));
    }
    heads = std::move(loaded);
    ResetOptimizer();  // re-points the parameter table at the loaded heads
    std::vector<float> values;
    for (const ParamTensor& p : params) {
      for (const auto& [prefix, dest] : {std::pair{kExpAvgPrefix, p.exp_avg}, std::pair{kExpAvgSqPrefix, p.exp_avg_sq}}) {
        const std::string name = prefix + p.name;
        const safetensors::TensorInfo* info = file->FindTensor(name);
        if (info == nullptr || info->shape != p.shape || info->dtype != safetensors::DType::kF32) {
          return absl::FailedPreconditionError(absl::StrCat(
              "checkpoint '", path, "': optimizer tensor '", name, "' is missing or not F32 of the parameter's shape"));
        }
        RETURN_IF_ERROR(file->ReadTensor(name, &values));
        std::copy(values.begin(), values.end(), dest);
      }
    }
    step = saved["step"].get<int64_t>();
    return absl::OkStatus();
  }
};

HeadsTrainer::HeadsTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HeadsTrainer::HeadsTrainer(HeadsTrainer&&) noexcept = default;
HeadsTrainer& HeadsTrainer::operator=(HeadsTrainer&&) noexcept = default;
HeadsTrainer::~HeadsTrainer() = default;

absl::StatusOr<HeadsTrainer> HeadsTrainer::Create(const TrainerOptions& options, const ModelConfig& config,
                                                  absl::Span<const float> classifier) {
  RETURN_IF_ERROR(options.Validate());
  if (config.dim <= 0 || config.vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("model config has dim ", config.dim, " and vocab_size ",
                                                   config.vocab_size, "; both must be positive"));
  }
  RETURN_IF_ERROR(CheckClassifier(classifier, config.vocab_size, config.dim));
  kernels::cpu::ConfigureBlasThreads();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->config = config;
  impl->classifier = classifier;
  impl->pool = std::make_unique<ThreadPool>(ResolveThreads(options.threads));
  impl->heads = ZeroHeads(options.num_heads, options.num_layers, config.dim, config.vocab_size,
                          !options.share_lm_head);
  for (MedusaHead& head : impl->heads.heads) {
    if (!head.projection.empty()) std::copy(classifier.begin(), classifier.end(), head.projection.begin());
  }
  impl->ResetOptimizer();
  impl->ws.Allocate(options.num_heads, options.num_layers, config.dim, config.vocab_size, options.batch_size,
                    impl->pool->size(), /*training=*/true);
  return HeadsTrainer(std::move(impl));
}

const MedusaHeadsWeights& HeadsTrainer::heads() const { return impl_->heads; }
const MedusaHeadsWeights& HeadsTrainer::gradients() const { return impl_->grads; }
const TrainerOptions& HeadsTrainer::options() const { return impl_->options; }
int64_t HeadsTrainer::step() const { return impl_->step; }

absl::Status HeadsTrainer::SetHeads(MedusaHeadsWeights heads) {
  RETURN_IF_ERROR(heads.Validate());
  const TrainerOptions& o = impl_->options;
  if (heads.num_heads != o.num_heads || heads.num_layers != o.num_layers || heads.dim != impl_->config.dim ||
      heads.vocab != impl_->config.vocab_size || heads.has_projection() == o.share_lm_head) {
    return absl::InvalidArgumentError(absl::StrCat(
        "heads (", heads.num_heads, " heads, ", heads.num_layers, " blocks, dim ", heads.dim, ", vocab ",
        heads.vocab, heads.has_projection() ? ", own projections" : ", shared projection",
        ") do not match the trainer (", o.num_heads, " heads, ", o.num_layers, " blocks, dim ",
        impl_->config.dim, ", vocab ", impl_->config.vocab_size,
        o.share_lm_head ? ", shared projection)" : ", own projections)"));
  }
  impl_->heads = std::move(heads);
  impl_->ResetOptimizer();
  return absl::OkStatus();
}

absl::StatusOr<double> HeadsTrainer::ComputeLossAndGradients(const DistillSet& data,
                                                             absl::Span<const int64_t> rows) {
  Impl& impl = *impl_;
  RETURN_IF_ERROR(CheckData(data, impl.K(), impl.config.dim, impl.config.vocab_size));
  if (rows.empty() || static_cast<int64_t>(rows.size()) > impl.options.batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("a batch has ", rows.size(), " rows, expected 1 to batch_size ",
                                                   impl.options.batch_size));
  }
  for (int64_t r : rows) {
    if (r < 0 || r >= data.rows()) {
      return absl::InvalidArgumentError(absl::StrCat("batch row ", r, " is outside the ", data.rows(), " rows"));
    }
  }
  return impl.RunBatch(data, rows.data(), static_cast<int>(rows.size()));
}

absl::Status HeadsTrainer::Train(const DistillSet& data, const TrainRunOptions& run) {
  Impl& impl = *impl_;
  const int K = impl.K();
  RETURN_IF_ERROR(CheckData(data, K, impl.config.dim, impl.config.vocab_size));
  const int rows = data.rows();
  const int batch = impl.options.batch_size;
  const int64_t steps_per_epoch = (rows + batch - 1) / batch;
  const int64_t total_steps = steps_per_epoch * impl.options.epochs;

  const std::string& path = run.checkpoint_path;
  nlohmann::json now;
  if (!path.empty()) {
    const std::string classifier_fingerprint =
        Hex(Fingerprint(impl.classifier.data(), impl.classifier.size() * sizeof(float), 2));
    now = impl.State(DataFingerprint(data), classifier_fingerprint, total_steps, rows);
    if (std::filesystem::exists(path)) {
      RETURN_IF_ERROR(impl.LoadCheckpoint(path, now));
    }
  }
  auto save = [&]() -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    now["step"] = impl.step;
    now["epoch"] = impl.step / steps_per_epoch;  // for people reading the file; not checked
    return impl.SaveCheckpoint(path, now);
  };

  // Progress over a window of steps.
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = impl.step;
  std::vector<double> window_loss(K, 0.0);
  std::vector<int64_t> window_valid(K, 0), window_hits(K, 0);
  double window_objective = 0.0;
  int64_t window_steps = 0, rows_done = 0;
  auto report = [&](int epoch) {
    TrainProgress p;
    p.step = impl.step;
    p.total_steps = total_steps;
    p.epoch = epoch;
    p.lr = LearningRate(impl.options, impl.step - 1, total_steps);
    p.loss = window_steps > 0 ? window_objective / window_steps : 0.0;
    for (int k = 0; k < K; ++k) {
      p.head_loss.push_back(window_valid[k] > 0 ? window_loss[k] / window_valid[k] : 0.0);
      p.top1.push_back(window_valid[k] > 0 ? static_cast<double>(window_hits[k]) / window_valid[k] : 0.0);
    }
    p.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    p.tokens_per_second = p.elapsed_seconds > 0 ? rows_done / p.elapsed_seconds : 0.0;
    const int64_t done = impl.step - first_step;
    p.eta_seconds = done > 0 ? p.elapsed_seconds / done * (total_steps - impl.step) : 0.0;
    std::fill(window_loss.begin(), window_loss.end(), 0.0);
    std::fill(window_valid.begin(), window_valid.end(), 0);
    std::fill(window_hits.begin(), window_hits.end(), 0);
    window_objective = 0.0;
    window_steps = 0;
    if (run.on_progress) run.on_progress(p);
  };

  std::vector<int64_t> order(rows);
  int order_epoch = -1;
  while (impl.step < total_steps) {
    const int epoch = static_cast<int>(impl.step / steps_per_epoch);
    if (epoch != order_epoch) {
      // Fisher-Yates with a generator that depends on the seed and the epoch alone, so a
      // resumed run shuffles exactly as the uninterrupted one did.
      std::mt19937_64 rng(impl.options.seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch + 1)));
      for (int i = 0; i < rows; ++i) order[i] = i;
      for (int i = rows - 1; i > 0; --i) std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
      order_epoch = epoch;
    }
    const int64_t begin = (impl.step % steps_per_epoch) * batch;
    const int count = static_cast<int>(std::min<int64_t>(batch, rows - begin));
    window_objective += impl.RunBatch(data, order.data() + begin, count);
    impl.ApplyUpdate(total_steps);
    for (int k = 0; k < K; ++k) {
      window_loss[k] += impl.batch_loss_sum[k];
      window_valid[k] += impl.batch_valid[k];
      window_hits[k] += impl.batch_hits[k];
    }
    ++window_steps;
    rows_done += count;

    const bool last = impl.step == total_steps;
    if (last || (run.progress_every_steps > 0 && impl.step % run.progress_every_steps == 0)) report(epoch);
    const bool stop = !last && ((run.stop_requested != nullptr && run.stop_requested->load()) ||
                                (run.stop_after_step > 0 && impl.step >= run.stop_after_step));
    if (last || stop || (run.checkpoint_every_steps > 0 && impl.step % run.checkpoint_every_steps == 0)) {
      RETURN_IF_ERROR(save());
    }
    if (stop) {
      return absl::CancelledError(absl::StrCat(
          "training stopped at step ", impl.step, " of ", total_steps,
          path.empty() ? "" : absl::StrCat("; checkpoint '", path, "' resumes it")));
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------ inference-only uses

namespace {

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
  Workspace ws;
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
  Workspace ws;
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
