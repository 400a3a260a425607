#include "engine/train/heads_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/train/adamw.h"
#include "engine/train/head_batch.h"
#include "engine/train/trainer_checkpoint.h"
#include "kernels/base/status_macros.h"
#include "kernels/math/blas.h"
#include "kernels/math/thread_pool.h"
#include "nlohmann/json.hpp"

namespace medusa {

using math::ThreadPool;
using train_internal::AdamW;
using train_internal::BackpropProjection;
using train_internal::BackwardBlocks;
using train_internal::CheckClassifier;
using train_internal::CheckData;
using train_internal::CheckEmbedding;
using train_internal::Checkpoint;
using train_internal::ForwardBlocks;
using train_internal::Gather;
using train_internal::GatherTeacher;
using train_internal::HeadBatch;
using train_internal::LossRow;
using train_internal::OpenCheckpoint;
using train_internal::ParamTensor;
using train_internal::Project;
using train_internal::ProjectionGradients;
using train_internal::ProjectTeacher;
using train_internal::ResolveThreads;
using train_internal::RestoreMoments;
using train_internal::SaveCheckpoint;
using train_internal::SliceBegin;
using train_internal::TrainingState;
using train_internal::ZeroHeads;

struct HeadsTrainer::Impl {
  TrainerOptions options;
  ModelConfig config;
  absl::Span<const float> classifier;  // the model's [vocab, dim]
  // What shared heads project with: the classifier, or its draft vocabulary's rows (and each
  // token's row there, -1 outside it).
  absl::Span<const float> projection;
  std::vector<float> draft_rows;
  std::vector<int32_t> draft_index;
  absl::Span<const float> embedding;
  std::unique_ptr<ThreadPool> pool;

  MedusaHeadsWeights heads, grads, exp_avg, exp_avg_sq;
  AdamW optimizer;
  int64_t step = 0;
  HeadBatch ws;

  // The last batch, per head: loss weight per valid target, summed cross-entropy, valid
  // targets, argmax hits.
  std::vector<float> batch_scale;
  std::vector<double> batch_loss_sum;
  std::vector<int64_t> batch_valid, batch_hits;

  int K() const { return options.num_heads; }

  // What row m of the stacked batch is scored against: its target's column in the logits, -1 for none.
  int32_t LossTarget(size_t m) const {
    const int32_t t = ws.targets[m];
    return t < 0 || draft_index.empty() ? t : draft_index[t];
  }

  // The projection over the draft vocabulary's rows, when there is one.
  absl::Status UseDraftVocab() {
    projection = classifier;
    const std::vector<int32_t>& draft = options.draft_vocab;
    if (draft.empty()) return absl::OkStatus();
    const int vocab = config.vocab_size, dim = config.dim;
    RETURN_IF_ERROR(CheckDraftVocab(draft, vocab));
    draft_index.assign(vocab, -1);
    draft_rows.resize(draft.size() * dim);
    for (size_t i = 0; i < draft.size(); ++i) {
      const int32_t id = draft[i];
      draft_index[id] = static_cast<int32_t>(i);
      std::copy_n(classifier.data() + static_cast<size_t>(id) * dim, dim, draft_rows.data() + i * dim);
    }
    projection = draft_rows;
    return absl::OkStatus();
  }

  // The data's shape for these heads, and what teacher targets need of it.
  absl::Status CheckTrainingData(const DistillSet& data) const {
    RETURN_IF_ERROR(CheckData(data, K(), config.dim, config.vocab_size, options.head_kind));
    if (options.teacher_weight > 0.0f && (!data.has_next() || data.num_heads < 2)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "teacher targets find each position's row by the tokens of its neighbours: they need data with next "
          "tokens and at least 2 target columns (this set has ",
          data.has_next() ? "next tokens" : "no next tokens", " and ", data.num_heads, ")"));
    }
    return absl::OkStatus();
  }

  // Zero gradients and moments, and the optimizer pointed at the heads as they are now.
  void ResetOptimizer() {
    const bool own = !options.share_lm_head;
    grads = ZeroHeads(K(), options.num_layers, config.dim, config.vocab_size, own, options.head_kind);
    exp_avg = grads;
    exp_avg_sq = grads;
    step = 0;
    std::vector<ParamTensor> params;
    auto add = [&](std::string name, std::vector<int64_t> shape, std::vector<float>& value,
                   std::vector<float>& grad, std::vector<float>& m, std::vector<float>& v, bool decay) {
      params.push_back({std::move(name), std::move(shape), value.data(), grad.data(), m.data(), v.data(),
                        value.size(), decay});
    };
    const int64_t dim = config.dim;
    for (int k = 0; k < K(); ++k) {
      for (int l = 0; l < options.num_layers; ++l) {
        add(absl::StrCat(k, ".", l, ".linear.weight"), {dim, heads.BlockInputs(k, l)}, heads.heads[k].blocks[l].weight,
            grads.heads[k].blocks[l].weight, exp_avg.heads[k].blocks[l].weight, exp_avg_sq.heads[k].blocks[l].weight,
            true);
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
    optimizer.SetParams(std::move(params));
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
      for (int i = 0; i < count; ++i) batch_valid[k] += LossTarget(static_cast<size_t>(k) * count + i) >= 0;
      scale[k] = batch_valid[k] > 0
                     ? static_cast<float>(std::pow(static_cast<double>(options.loss_decay), k + 1) /
                                          batch_valid[k])
                     : 0.0f;
    }
    ForwardBlocks(heads, ws, *pool);
    Project(heads, projection, ws, ws.logits.data(), *pool);
    const bool teacher = options.teacher_weight > 0.0f;
    if (teacher) {
      GatherTeacher(data, rows, count, ws);
      ProjectTeacher(projection, ws, *pool);
    }
    const int stacked = K() * count;
    const int width = ws.vocab;
    pool->Run(pool->size(), [&](int t, int n) {
      for (int m = SliceBegin(stacked, t, n); m < SliceBegin(stacked, t + 1, n); ++m) {
        bool top1 = false;
        const size_t offset = static_cast<size_t>(m) * width;
        float* teacher_row = teacher && ws.has_teacher[m] ? ws.teacher_logits.data() + offset : nullptr;
        ws.row_loss[m] = LossRow(ws.logits.data() + offset, width, LossTarget(m), scale[m / count], &top1, teacher_row,
                                 options.teacher_weight);
        ws.row_rank[m] = top1 ? 0 : 1;  // only top-1 is tracked while training
      }
    });
    BackpropProjection(heads, projection, ws, *pool);
    if (heads.has_projection()) ProjectionGradients(ws, grads, *pool);
    BackwardBlocks(heads, ws, grads, *pool);
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

  // Continues from the checkpoint at `path`, made by a run like `state`.
  absl::Status Resume(const std::string& path, const nlohmann::json& state) {
    ASSIGN_OR_RETURN(Checkpoint checkpoint, OpenCheckpoint(path, state, config, options));
    heads = std::move(checkpoint.heads);
    heads.draft_vocab = options.draft_vocab;
    ResetOptimizer();  // points the optimizer at the loaded heads
    RETURN_IF_ERROR(RestoreMoments(checkpoint, path, optimizer.params()));
    step = checkpoint.step;
    return absl::OkStatus();
  }
};

HeadsTrainer::HeadsTrainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HeadsTrainer::HeadsTrainer(HeadsTrainer&&) noexcept = default;
HeadsTrainer& HeadsTrainer::operator=(HeadsTrainer&&) noexcept = default;
HeadsTrainer::~HeadsTrainer() = default;

absl::StatusOr<HeadsTrainer> HeadsTrainer::Create(const TrainerOptions& options, const ModelConfig& config,
                                                  absl::Span<const float> classifier,
                                                  absl::Span<const float> embedding) {
  RETURN_IF_ERROR(options.Validate());
  if (config.dim <= 0 || config.vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("model config has dim ", config.dim, " and vocab_size ",
                                                   config.vocab_size, "; both must be positive"));
  }
  RETURN_IF_ERROR(CheckClassifier(classifier, config.vocab_size, config.dim));
  RETURN_IF_ERROR(CheckEmbedding(options.head_kind, embedding, config.vocab_size, config.dim));
  RETURN_IF_ERROR(math::LoadBlas());
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->config = config;
  impl->classifier = classifier;
  RETURN_IF_ERROR(impl->UseDraftVocab());
  impl->embedding = embedding;
  impl->pool = std::make_unique<ThreadPool>(ResolveThreads(options.threads));
  impl->heads = ZeroHeads(options.num_heads, options.num_layers, config.dim, config.vocab_size, !options.share_lm_head,
                          options.head_kind);
  impl->heads.draft_vocab = options.draft_vocab;
  for (MedusaHead& head : impl->heads.heads) {
    if (!head.projection.empty()) std::copy(classifier.begin(), classifier.end(), head.projection.begin());
  }
  impl->ResetOptimizer();
  impl->ws.Allocate(options.num_heads, options.num_layers, config.dim,
                    static_cast<int>(impl->projection.size() / config.dim), options.batch_size, impl->pool->size(),
                    /*training=*/true, /*vocab_rows=*/true, options.head_kind,
                    /*teacher=*/options.teacher_weight > 0.0f);
  impl->ws.embedding = embedding;
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
      heads.vocab != impl_->config.vocab_size || heads.has_projection() == o.share_lm_head ||
      heads.kind != o.head_kind) {
    return absl::InvalidArgumentError(
        absl::StrCat("heads (", heads.num_heads, " heads, ", heads.num_layers, " blocks, dim ", heads.dim, ", vocab ",
                     heads.vocab, heads.has_projection() ? ", own projections" : ", shared projection",
                     heads.kind == HeadKind::kHydra ? ", Hydra" : ", Medusa", ") do not match the trainer (",
                     o.num_heads, " heads, ", o.num_layers, " blocks, dim ", impl_->config.dim, ", vocab ",
                     impl_->config.vocab_size, o.share_lm_head ? ", shared projection" : ", own projections",
                     o.head_kind == HeadKind::kHydra ? ", Hydra)" : ", Medusa)"));
  }
  impl_->heads = std::move(heads);
  if (!o.draft_vocab.empty()) impl_->heads.draft_vocab = o.draft_vocab;  // what they train over
  impl_->ResetOptimizer();
  return absl::OkStatus();
}

absl::StatusOr<double> HeadsTrainer::ComputeLossAndGradients(const DistillSet& data,
                                                             absl::Span<const int64_t> rows) {
  Impl& impl = *impl_;
  RETURN_IF_ERROR(impl.CheckTrainingData(data));
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
  RETURN_IF_ERROR(impl.CheckTrainingData(data));
  const int rows = data.rows();
  const int batch = impl.options.batch_size;
  const int64_t steps_per_epoch = (rows + batch - 1) / batch;
  const int64_t total_steps = steps_per_epoch * impl.options.epochs;

  const std::string& path = run.checkpoint_path;
  nlohmann::json state;
  if (!path.empty()) {
    state = TrainingState(impl.options, impl.config, impl.classifier, data, total_steps);
    if (std::filesystem::exists(path)) RETURN_IF_ERROR(impl.Resume(path, state));
  }
  auto save = [&]() -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    state["step"] = impl.step;
    state["epoch"] = impl.step / steps_per_epoch;  // for people reading the file; not checked
    return SaveCheckpoint(path, impl.optimizer.params(), state, impl.options);
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
    impl.optimizer.Update(impl.options, LearningRate(impl.options, impl.step, total_steps), impl.step, *impl.pool);
    ++impl.step;
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

}  // namespace medusa
