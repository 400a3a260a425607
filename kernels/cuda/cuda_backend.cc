// How a step runs on the GPU.
//
// Forward plans the batch on the host (step_plan.h: output rows first, query groups, ancestor
// masks), uploads the plan with one copy, then runs the layers: each product through the
// batch-invariant GEMM for the output rows and through cuBLAS for the prompt rows nobody
// reads; attention over the paged cache by query group; the last layer only for the output
// rows. A step whose rows are all output rows (decode, Medusa verification) replays a CUDA
// graph captured for its row capacity (graph_capacity.h): its kernels read the step's counts
// from the plan, so once each capacity has been seen a step allocates nothing and captures
// nothing. Results are copied back and the stream synchronized before Forward returns, so
// every error surfaces as the call's status.

#include "kernels/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/base/status_macros.h"
#include "kernels/cuda/attention_kernels.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/device_model.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_cublas.h"
#include "kernels/cuda/graph_capacity.h"
#include "kernels/cuda/layer_kernels.h"
#include "kernels/cuda/medusa_heads.h"
#include "kernels/cuda/memory_plan.h"
#include "kernels/cuda/selection_kernels.h"
#include "kernels/cuda/step_plan.h"

namespace medusa::kernels::cuda {
namespace {

absl::StatusOr<WeightType> ParseWeightType(const std::string& name) {
  if (name == "auto" || name == "f16") return WeightType::kFloat16;
  if (name == "bf16") return WeightType::kBfloat16;
  if (name == "f32") return WeightType::kFloat32;
  return absl::InvalidArgumentError(absl::StrCat("--weights must be auto, f32, f16 or bf16, got \"", name, "\""));
}

// Launch sizes of one forward pass: the step's own counts when launched directly, a graph
// capacity when captured (the kernels read the true counts from the plan either way).
struct LaunchShape {
  int rows = 0;            // kernels over every row
  int invariant_rows = 0;  // the output rows' products, and the last layer
  int output_rows = 0;     // the final norm and the classifier
  int task_grid = 0;       // attention blocks per KV head
  int invariant_task_grid = 0;
  int cublas_begin = 0;  // rows [cublas_begin, cublas_begin + cublas_rows) go through cuBLAS
  int cublas_rows = 0;
  bool logits = true;
  // Offsets of the per-row arrays in the plan (fixed by its row capacity).
  int tokens_at = 0, positions_at = 0, kv_slots_at = 0, output_rows_at = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const BackendOptions& options, WeightType type) : options_(options), type_(type) {}
  ~CudaBackend() override;
  absl::Status Init();

  std::string Name() const override { return "cuda"; }
  std::string MachineId() const override { return machine_id_; }
  const ModelConfig& config() const override { return config_; }

  absl::Status LoadWeights(const ModelConfig& config, ModelWeights weights) override;
  size_t KvBytesPerBlock(int block_size) const override {
    return static_cast<size_t>(config_.n_layers) * 2 * config_.kv_dim() * std::max(block_size, 0) * TypeBytes(type_);
  }
  absl::StatusOr<int> KvBlocksFor(int64_t budget_bytes, int block_size) const override;
  absl::Status AllocateKvCache(const KvCacheSpec& spec) override;
  absl::Status Forward(const ForwardBatch& batch, ForwardResult* result) override;
  absl::Status ReadOutputLogits(int output_row, std::vector<float>* logits) override;
  absl::Status CopyKvSlots(absl::Span<const KvSlotCopy> copies) override;
  absl::Status ReadKvSlot(int layer, int block, int slot, std::vector<float>* k, std::vector<float>* v) const override;

  absl::Status LoadMedusaHeads(MedusaHeadsWeights heads) override {
    if (!loaded_) return absl::FailedPreconditionError("LoadMedusaHeads before LoadWeights");
    if (heads.kind == HeadKind::kHydra) {
      return absl::UnimplementedError("Hydra heads run on the CPU backend only; the CUDA backend serves Medusa heads");
    }
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return heads_.Load(std::move(heads), config_.dim, config_.vocab_size, &model_.classifier, type_);
  }
  int num_medusa_heads() const override { return heads_.num_heads(); }
  absl::Status MedusaHeadTopK(absl::Span<const float> hidden, int rows, absl::Span<const int> topk,
                              std::vector<int32_t>* ids) override {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return heads_.TopK(hidden, rows, topk, stream_, ids);
  }
  absl::Span<const int32_t> medusa_draft_vocab() const override { return heads_.draft_vocab(); }
  HeadKind medusa_head_kind() const override { return HeadKind::kMedusa; }
  absl::Status HydraHeadLogits(absl::Span<const float>, absl::Span<const int32_t>, int, int,
                               std::vector<float>*) override {
    return absl::UnimplementedError("Hydra heads run on the CPU backend only");
  }
  absl::Status MedusaHeadLogits(absl::Span<const float> hidden, int rows, int num_heads,
                                std::vector<float>* head_logits) override {
    CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return heads_.Compute(hidden, rows, num_heads, stream_, head_logits);
  }

 private:
  int QkvDim() const { return config_.q_dim() + 2 * config_.kv_dim(); }
  size_t LayerCacheBytes() const { return static_cast<size_t>(layer_values_) * TypeBytes(type_); }
  void* KLayer(int layer) const { return static_cast<char*>(k_cache_.get()) + layer * LayerCacheBytes(); }
  void* VLayer(int layer) const { return static_cast<char*>(v_cache_.get()) + layer * LayerCacheBytes(); }
  int MaxTaskGrid() const { return std::max(1, 8 * sm_count_ / std::max(1, config_.n_kv_heads)); }

  // Grows the scratch to hold a step of `rows` rows, `output_rows` outputs, `parts` attention
  // partials and a plan of `plan_values` entries; any reallocation drops the captured graphs.
  absl::Status ReserveScratch(int rows, int output_rows, int64_t parts, size_t plan_values);
  absl::Status UploadPlan(const StepPlan& plan);
  LaunchShape DirectShape(const StepPlan& plan, bool logits) const;
  LaunchShape GraphShape(const StepPlan& plan, int capacity) const;
  // Enqueues the forward pass's kernels (and cuBLAS calls) on the stream.
  absl::Status Enqueue(const LaunchShape& shape);
  // y = x W^T: the invariant rows through the invariant GEMM, then `cublas_rows` more through cuBLAS.
  absl::Status Project(const float* x, const DeviceMatrix& w, float* y, int ldy, bool accumulate, RowCount invariant,
                       const LaunchShape& shape, int cublas_rows);
  absl::Status LaunchGraph(const StepPlan& plan, int capacity);
  // Enqueues the batch's row_stats and logit_queries over the step's logits, their answers
  // copied to answers_host_; CollectAnswers reads them once the stream is done.
  absl::Status EnqueueQueries(const ForwardBatch& batch);
  void CollectAnswers(const ForwardBatch& batch, ForwardResult* result) const;
  void ClearGraphs();
  void ReleaseModel();

  BackendOptions options_;
  WeightType type_;
  int device_ = 0;
  int sm_count_ = 1;
  std::string machine_id_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  bool loaded_ = false;
  ModelConfig config_;
  DeviceModel model_;
  MedusaHeadsCuda heads_;

  KvCacheSpec kv_spec_;
  int64_t layer_values_ = 0;  // values per layer in each of the K and V caches
  DeviceBuffer k_cache_, v_cache_;
  std::optional<StepPlanner> planner_;

  // Scratch for the largest step seen (reserved for BackendOptions::reserve_step_tokens at load).
  int scratch_rows_ = 0, scratch_output_rows_ = 0;
  int64_t scratch_parts_ = 0;
  DeviceBuffer x_, xb_, qkv_, att_, gate_up_, act_, x16_;
  DeviceBuffer out_x_, out_h_, logits_, argmax_;
  DeviceBuffer partial_max_, partial_den_, partial_acc_;
  DeviceBuffer plan_;
  PinnedBuffer plan_staging_;
  // CopyKvSlots's slot lists and staging.
  PinnedBuffer copy_slots_host_;
  DeviceBuffer copy_slots_, copy_staging_;
  // The batch's softmax and logit queries (typical acceptance) and their answers.
  PinnedBuffer queries_host_, answers_host_;
  DeviceBuffer queries_, answers_;
  int logits_rows_ = 0;  // output rows whose logits logits_ holds (ReadOutputLogits)

  std::map<int, cudaGraphExec_t> graphs_;  // by row capacity
};

CudaBackend::~CudaBackend() {
  ClearGraphs();
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::Status CudaBackend::Init() {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  cudaDeviceProp props;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&props, device_));
  if (props.major < 8) {
    return absl::UnavailableError(
        absl::StrFormat("the CUDA backend needs compute capability 8.0 or newer (A100, H100); %s has %d.%d", props.name,
                        props.major, props.minor));
  }
  sm_count_ = props.multiProcessorCount;
  int driver = 0;
  CUDA_RETURN_IF_ERROR(cudaDriverGetVersion(&driver));
  machine_id_ = absl::StrFormat("cuda %s, sm_%d%d, %d SMs, %d GiB, driver %d.%d, %s weights", props.name, props.major,
                                props.minor, props.multiProcessorCount, static_cast<int>(props.totalGlobalMem >> 30),
                                driver / 1000, driver % 1000 / 10, WeightTypeName(type_));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_));
  CUDA_RETURN_IF_ERROR(PrepareAttentionKernels());
  return absl::OkStatus();
}

void CudaBackend::ClearGraphs() {
  for (auto& [capacity, graph] : graphs_) cudaGraphExecDestroy(graph);
  graphs_.clear();
}

void CudaBackend::ReleaseModel() {
  ClearGraphs();
  loaded_ = false;
  heads_ = MedusaHeadsCuda();
  model_ = DeviceModel();
  k_cache_.Release();
  v_cache_.Release();
  kv_spec_ = KvCacheSpec{};
  planner_.reset();
  for (DeviceBuffer* b : {&x_, &xb_, &qkv_, &att_, &gate_up_, &act_, &x16_, &out_x_, &out_h_, &logits_, &partial_max_,
                          &partial_den_, &partial_acc_}) {
    b->Release();
  }
  scratch_rows_ = scratch_output_rows_ = 0;
  scratch_parts_ = 0;
}

absl::Status CudaBackend::LoadWeights(const ModelConfig& config, ModelWeights weights) {
  RETURN_IF_ERROR(ValidateWeights(config, weights));
  if (config.head_dim > kMaxHeadDim || config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the CUDA backend takes even head sizes up to ", kMaxHeadDim,
                                                   "; this model's is ", config.head_dim));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  ReleaseModel();
  ASSIGN_OR_RETURN(model_, UploadModel(config, std::move(weights), type_));
  config_ = config;
  // Scratch before the KV pool, so the pool takes what is left.
  const int reserve = std::max(1, options_.reserve_step_tokens);
  RETURN_IF_ERROR(ReserveScratch(reserve, std::min(reserve, 256), 4ll * reserve, 0));
  loaded_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int> CudaBackend::KvBlocksFor(int64_t budget_bytes, int block_size) const {
  if (!loaded_) return absl::FailedPreconditionError("KvBlocksFor before LoadWeights");
  if (budget_bytes < 0) return absl::InvalidArgumentError("a KV cache budget cannot be negative");
  if (block_size <= 0) return absl::InvalidArgumentError("a KV block holds at least one token");
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  size_t free = 0, total = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free, &total));
  MemoryPlanInput in;
  in.total_bytes = static_cast<int64_t>(total);
  in.free_bytes = static_cast<int64_t>(free);
  in.fraction = options_.gpu_memory_fraction;
  in.requested_kv_bytes = budget_bytes > 0 ? budget_bytes : std::numeric_limits<int64_t>::max();
  in.kv_bytes_per_block = static_cast<int64_t>(KvBytesPerBlock(block_size));
  return PlanKvBlocks(in);
}

absl::Status CudaBackend::AllocateKvCache(const KvCacheSpec& spec) {
  if (!loaded_) return absl::FailedPreconditionError("AllocateKvCache before LoadWeights");
  if (spec.num_blocks <= 0 || spec.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("KvCacheSpec needs positive num_blocks and block_size, got ",
                                                   spec.num_blocks, " and ", spec.block_size));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  ClearGraphs();
  k_cache_.Release();
  v_cache_.Release();
  kv_spec_ = KvCacheSpec{};
  planner_.reset();
  // Step plans address slots as int32.
  if (static_cast<int64_t>(spec.num_blocks) * spec.block_size > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("KvCacheSpec is too large to address");
  }
  const int64_t values = static_cast<int64_t>(spec.num_blocks) * spec.block_size * config_.kv_dim();
  const size_t bytes = static_cast<size_t>(values) * config_.n_layers * TypeBytes(type_);
  absl::Status status = k_cache_.Allocate(bytes);
  if (status.ok()) status = v_cache_.Allocate(bytes);
  if (!status.ok()) {
    k_cache_.Release();
    v_cache_.Release();
    return status;
  }
  // Zeroed, so a slot that was never written reads as zeros rather than garbage.
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(k_cache_.get(), 0, bytes, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(v_cache_.get(), 0, bytes, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  kv_spec_ = spec;
  layer_values_ = values;
  planner_.emplace(spec.block_size, config_.n_heads / config_.n_kv_heads);
  return absl::OkStatus();
}

absl::Status CudaBackend::ReserveScratch(int rows, int output_rows, int64_t parts, size_t plan_values) {
  bool grew = false;
  auto reserve = [&grew](DeviceBuffer& buffer, size_t bytes) -> absl::Status {
    ASSIGN_OR_RETURN(const bool reallocated, buffer.Reserve(bytes));
    grew |= reallocated;
    return absl::OkStatus();
  };
  // Grow with headroom, so a slowly growing step does not reallocate every time.
  auto grown = [](int64_t want, int64_t have) { return want <= have ? have : std::max(want, have + have / 2); };
  const size_t f = sizeof(float);
  if (rows > scratch_rows_) {
    const size_t r = grown(rows, scratch_rows_);
    const size_t widest = std::max({config_.dim, config_.q_dim(), config_.hidden_dim});
    RETURN_IF_ERROR(reserve(x_, r * config_.dim * f));
    RETURN_IF_ERROR(reserve(xb_, r * config_.dim * f));
    RETURN_IF_ERROR(reserve(qkv_, r * QkvDim() * f));
    RETURN_IF_ERROR(reserve(att_, r * config_.q_dim() * f));
    RETURN_IF_ERROR(reserve(gate_up_, r * 2 * config_.hidden_dim * f));
    RETURN_IF_ERROR(reserve(act_, r * config_.hidden_dim * f));
    RETURN_IF_ERROR(reserve(x16_, r * widest * TypeBytes(type_)));
    scratch_rows_ = static_cast<int>(r);
  }
  if (output_rows > scratch_output_rows_) {
    const size_t r = grown(output_rows, scratch_output_rows_);
    RETURN_IF_ERROR(reserve(out_x_, r * config_.dim * f));
    RETURN_IF_ERROR(reserve(out_h_, r * config_.dim * f));
    RETURN_IF_ERROR(reserve(logits_, r * config_.vocab_size * f));
    RETURN_IF_ERROR(reserve(argmax_, r * sizeof(int32_t)));
    // The classifier's tensor-core input: output rows of `dim`.
    RETURN_IF_ERROR(reserve(x16_, std::max(x16_.bytes(), r * config_.dim * TypeBytes(type_))));
    scratch_output_rows_ = static_cast<int>(r);
  }
  if (parts > scratch_parts_) {
    const size_t p = grown(parts, scratch_parts_);
    RETURN_IF_ERROR(reserve(partial_max_, p * config_.n_heads * f));
    RETURN_IF_ERROR(reserve(partial_den_, p * config_.n_heads * f));
    RETURN_IF_ERROR(reserve(partial_acc_, p * config_.n_heads * config_.head_dim * f));
    scratch_parts_ = static_cast<int64_t>(p);
  }
  if (plan_values * sizeof(int32_t) > plan_.bytes()) {
    RETURN_IF_ERROR(reserve(plan_, grown(plan_values, plan_.bytes() / sizeof(int32_t)) * sizeof(int32_t)));
  }
  if (grew) ClearGraphs();
  return absl::OkStatus();
}

absl::Status CudaBackend::UploadPlan(const StepPlan& plan) {
  const size_t bytes = plan.data.size() * sizeof(int32_t);
  RETURN_IF_ERROR(plan_staging_.Reserve(bytes));
  std::memcpy(plan_staging_.get(), plan.data.data(), bytes);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(plan_.get(), plan_staging_.get(), bytes, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

LaunchShape CudaBackend::DirectShape(const StepPlan& plan, bool logits) const {
  LaunchShape s;
  s.rows = plan.rows();
  s.invariant_rows = plan.invariant_rows();
  s.output_rows = plan.header(kPlanOutputRows);
  s.task_grid = std::min(plan.header(kPlanTasks), MaxTaskGrid());
  s.invariant_task_grid = std::min(plan.header(kPlanInvariantTasks), MaxTaskGrid());
  s.cublas_begin = s.invariant_rows;
  s.cublas_rows = s.rows - s.invariant_rows;
  s.logits = logits;
  s.tokens_at = plan.header(kPlanTokensAt);
  s.positions_at = plan.header(kPlanPositionsAt);
  s.kv_slots_at = plan.header(kPlanKvSlotsAt);
  s.output_rows_at = plan.header(kPlanOutputRowsAt);
  return s;
}

LaunchShape CudaBackend::GraphShape(const StepPlan& plan, int capacity) const {
  LaunchShape s = DirectShape(plan, /*logits=*/true);
  s.rows = s.invariant_rows = s.output_rows = capacity;
  s.task_grid = s.invariant_task_grid = MaxTaskGrid();
  s.cublas_rows = 0;
  return s;
}

absl::Status CudaBackend::Project(const float* x, const DeviceMatrix& w, float* y, int ldy, bool accumulate,
                                  RowCount invariant, const LaunchShape& shape, int cublas_rows) {
  LaunchInvariantGemm(x, invariant, w.in, w.get(), type_, w.out, w.in, y, ldy, accumulate, x16_.get(), stream_);
  if (cublas_rows == 0) return absl::OkStatus();
  const int64_t begin = shape.cublas_begin;
  return CublasGemm(cublas_, x + begin * w.in, cublas_rows, w.in, w.get(), type_, w.out, w.in, y + begin * ldy, ldy,
                    accumulate, x16_.get(), stream_);
}

absl::Status CudaBackend::Enqueue(const LaunchShape& shape) {
  const ModelConfig& c = config_;
  const int32_t* plan = plan_.get<int32_t>();
  const RowCount all{plan + kPlanRows, shape.rows};
  const RowCount invariant{plan + kPlanInvariantRows, shape.invariant_rows};
  float* x = x_.get<float>();
  float* xb = xb_.get<float>();
  float* qkv = qkv_.get<float>();
  const DeviceMatrix& table = model_.embedding_table();
  LaunchEmbeddingGather(table.get(), table.type, plan + shape.tokens_at, all, c.dim, x, stream_);
  for (int l = 0; l < c.n_layers; ++l) {
    const DeviceLayer& L = model_.layers[l];
    const bool last = l + 1 == c.n_layers;
    // x += attention(norm(x)) Wo; every row's K and V are written, but in the last layer only
    // the output rows go on.
    LaunchRmsNorm(x, L.attn_norm.get<float>(), all, c.dim, c.dim, c.rms_eps, xb, stream_);
    RETURN_IF_ERROR(Project(xb, L.wqkv, qkv, QkvDim(), false, invariant, shape, shape.cublas_rows));
    LaunchRopeAndWriteKv(qkv, all, plan + shape.positions_at, plan + shape.kv_slots_at,
                         model_.rope_frequencies.get<double>(), c.n_heads, c.n_kv_heads, c.head_dim, KLayer(l),
                         VLayer(l), type_, stream_);
    AttentionArgs a;
    a.plan = plan;
    a.qkv = qkv;
    a.qkv_stride = QkvDim();
    a.n_heads = c.n_heads;
    a.n_kv_heads = c.n_kv_heads;
    a.head_dim = c.head_dim;
    a.block_size = kv_spec_.block_size;
    a.k_cache = KLayer(l);
    a.v_cache = VLayer(l);
    a.cache_type = type_;
    a.partial_max = partial_max_.get<float>();
    a.partial_den = partial_den_.get<float>();
    a.partial_acc = partial_acc_.get<float>();
    a.out = att_.get<float>();
    a.invariant_only = last;
    LaunchPagedAttention(a, last ? shape.invariant_task_grid : shape.task_grid,
                         last ? shape.invariant_rows : shape.rows, stream_);
    const int cublas_rows = last ? 0 : shape.cublas_rows;
    const RowCount live = last ? invariant : all;
    RETURN_IF_ERROR(Project(att_.get<float>(), L.wo, x, c.dim, true, invariant, shape, cublas_rows));
    // x += down(silu(gate(norm(x))) * up(norm(x))).
    LaunchRmsNorm(x, L.ffn_norm.get<float>(), live, c.dim, c.dim, c.rms_eps, xb, stream_);
    RETURN_IF_ERROR(
        Project(xb, L.w_gate_up, gate_up_.get<float>(), 2 * c.hidden_dim, false, invariant, shape, cublas_rows));
    LaunchSwiGlu(gate_up_.get<float>(), live, c.hidden_dim, act_.get<float>(), stream_);
    RETURN_IF_ERROR(Project(act_.get<float>(), L.w_down, x, c.dim, true, invariant, shape, cublas_rows));
  }
  // The output rows, in the batch's order (repeats included): final norm, then the classifier.
  const RowCount outputs{plan + kPlanOutputRows, shape.output_rows};
  LaunchGatherRows(x, plan + shape.output_rows_at, outputs, c.dim, out_x_.get<float>(), stream_);
  LaunchRmsNorm(out_x_.get<float>(), model_.final_norm.get<float>(), outputs, c.dim, c.dim, c.rms_eps,
                out_h_.get<float>(), stream_);
  if (shape.logits) {
    LaunchInvariantGemm(out_h_.get<float>(), outputs, c.dim, model_.classifier.get(), type_, c.vocab_size, c.dim,
                        logits_.get<float>(), c.vocab_size, false, x16_.get(), stream_);
    LaunchArgmaxRows(logits_.get<float>(), outputs, c.vocab_size, argmax_.get<int32_t>(), stream_);
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::LaunchGraph(const StepPlan& plan, int capacity) {
  auto it = graphs_.find(capacity);
  if (it == graphs_.end()) {
    cudaGraph_t graph = nullptr;
    CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = Enqueue(GraphShape(plan, capacity));
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    RETURN_IF_ERROR(enqueued);
    CUDA_RETURN_IF_ERROR(ended);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_RETURN_IF_ERROR(instantiated);
    it = graphs_.emplace(capacity, exec).first;
  }
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::Forward(const ForwardBatch& batch, ForwardResult* result) {
  if (!loaded_) return absl::FailedPreconditionError("Forward before LoadWeights");
  if (!planner_) return absl::FailedPreconditionError("Forward before AllocateKvCache");
  if (result == nullptr) return absl::InvalidArgumentError("Forward needs a result");
  RETURN_IF_ERROR(ValidateBatch(batch, config_.vocab_size, kv_spec_));
  const int n = static_cast<int>(batch.tokens.size());
  const int outputs = n == 0 ? 0 : static_cast<int>(batch.output_rows.size());
  if (!batch.want_logits || outputs == 0) result->logits.clear();
  if (!batch.want_hidden || outputs == 0) result->hidden.clear();
  if (!batch.want_argmax || outputs == 0) result->argmax.clear();
  result->row_stats.clear();
  result->queried_logits.clear();
  logits_rows_ = 0;
  if (n == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  const bool queries = !batch.row_stats.empty() || !batch.logit_queries.empty();
  const bool logits = batch.want_logits || batch.want_argmax || queries;

  // A step whose rows are all output rows replays its capacity's graph.
  const int capacity = options_.cuda_graphs ? GraphCapacityFor(n) : 0;
  const StepPlan& plan = planner_->Plan(batch, capacity);
  const bool graph = capacity > 0 && plan.invariant_rows() == n && outputs <= capacity;
  RETURN_IF_ERROR(
      ReserveScratch(graph ? capacity : n, graph ? capacity : outputs, plan.header(kPlanParts), plan.data.size()));
  RETURN_IF_ERROR(UploadPlan(plan));
  if (graph) {
    RETURN_IF_ERROR(LaunchGraph(plan, capacity));  // a graph always makes the logits
  } else {
    RETURN_IF_ERROR(Enqueue(DirectShape(plan, logits)));
  }
  if (queries) RETURN_IF_ERROR(EnqueueQueries(batch));
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (outputs > 0 && batch.want_hidden) {
    result->hidden.resize(static_cast<size_t>(outputs) * config_.dim);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(result->hidden.data(), out_h_.get(), result->hidden.size() * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  if (outputs > 0 && batch.want_logits) {
    result->logits.resize(static_cast<size_t>(outputs) * config_.vocab_size);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(result->logits.data(), logits_.get(), result->logits.size() * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  if (outputs > 0 && batch.want_argmax) {
    result->argmax.resize(outputs);
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(result->argmax.data(), argmax_.get(), outputs * sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  if (queries) CollectAnswers(batch, result);
  logits_rows_ = (graph || logits) ? outputs : 0;
  return absl::OkStatus();
}

// Queries go up as int32: the stats rows, their temperatures (float bits), the logit
// queries' rows, then their tokens. Answers come back as 3 doubles per stats query, then
// one float per logit query.
absl::Status CudaBackend::EnqueueQueries(const ForwardBatch& batch) {
  const size_t s = batch.row_stats.size(), l = batch.logit_queries.size();
  const size_t query_bytes = (2 * s + 2 * l) * sizeof(int32_t);
  const size_t answer_bytes = 3 * s * sizeof(double) + l * sizeof(float);
  RETURN_IF_ERROR(queries_host_.Reserve(query_bytes));
  RETURN_IF_ERROR(answers_host_.Reserve(answer_bytes));
  RETURN_IF_ERROR(queries_.Reserve(query_bytes).status());
  RETURN_IF_ERROR(answers_.Reserve(answer_bytes).status());
  int32_t* host = queries_host_.get<int32_t>();
  for (size_t i = 0; i < s; ++i) {
    host[i] = batch.row_stats[i].output_row;
    std::memcpy(&host[s + i], &batch.row_stats[i].temperature, sizeof(float));
  }
  for (size_t i = 0; i < l; ++i) {
    host[2 * s + i] = batch.logit_queries[i].output_row;
    host[2 * s + l + i] = batch.logit_queries[i].token;
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(queries_.get(), host, query_bytes, cudaMemcpyHostToDevice, stream_));
  const int32_t* device = queries_.get<int32_t>();
  double* stats = answers_.get<double>();
  const int vocab = config_.vocab_size;
  LaunchSoftmaxStats(logits_.get<float>(), vocab, device, reinterpret_cast<const float*>(device + s),
                     static_cast<int>(s), stats, stream_);
  LaunchGatherLogits(logits_.get<float>(), vocab, device + 2 * s, device + 2 * s + l, static_cast<int>(l),
                     reinterpret_cast<float*>(stats + 3 * s), stream_);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(answers_host_.get(), answers_.get(), answer_bytes, cudaMemcpyDeviceToHost, stream_));
  return absl::OkStatus();
}

void CudaBackend::CollectAnswers(const ForwardBatch& batch, ForwardResult* result) const {
  const size_t s = batch.row_stats.size(), l = batch.logit_queries.size();
  const double* stats = answers_host_.get<double>();
  result->row_stats.resize(s);
  for (size_t i = 0; i < s; ++i) {
    result->row_stats[i] = SoftmaxStats{static_cast<float>(stats[3 * i]), stats[3 * i + 1], stats[3 * i + 2]};
  }
  const float* logits = reinterpret_cast<const float*>(stats + 3 * s);
  result->queried_logits.assign(logits, logits + l);
}

absl::Status CudaBackend::ReadOutputLogits(int output_row, std::vector<float>* logits) {
  if (logits_rows_ == 0) return absl::FailedPreconditionError("ReadOutputLogits: the last forward made no logits");
  if (output_row < 0 || output_row >= logits_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadOutputLogits: output row ", output_row, " is not in [0, ", logits_rows_, ")"));
  }
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  const size_t vocab = config_.vocab_size;
  logits->resize(vocab);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), logits_.get<float>() + output_row * vocab, vocab * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyKvSlots(absl::Span<const KvSlotCopy> copies) {
  if (!planner_) return absl::FailedPreconditionError("CopyKvSlots before AllocateKvCache");
  for (const KvSlotCopy& c : copies) {
    RETURN_IF_ERROR(CheckKvSlot(kv_spec_, c.src_block, c.src_slot, "copy source"));
    RETURN_IF_ERROR(CheckKvSlot(kv_spec_, c.dst_block, c.dst_slot, "copy destination"));
  }
  if (copies.empty()) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  const int count = static_cast<int>(copies.size());
  const int bs = kv_spec_.block_size;
  RETURN_IF_ERROR(copy_slots_host_.Reserve(2 * copies.size() * sizeof(int32_t)));
  int32_t* slots = copy_slots_host_.get<int32_t>();
  for (int i = 0; i < count; ++i) {
    slots[i] = copies[i].src_block * bs + copies[i].src_slot;
    slots[count + i] = copies[i].dst_block * bs + copies[i].dst_slot;
  }
  RETURN_IF_ERROR(copy_slots_.Reserve(2 * copies.size() * sizeof(int32_t)).status());
  RETURN_IF_ERROR(
      copy_staging_.Reserve(copies.size() * config_.n_layers * 2 * config_.kv_dim() * TypeBytes(type_)).status());
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(copy_slots_.get(), slots, 2 * copies.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  const int32_t* device_slots = copy_slots_.get<int32_t>();
  LaunchKvSlotCopy(device_slots, device_slots + count, count, config_.n_layers, layer_values_, config_.kv_dim(),
                   k_cache_.get(), v_cache_.get(), type_, copy_staging_.get(), stream_);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::ReadKvSlot(int layer, int block, int slot, std::vector<float>* k,
                                     std::vector<float>* v) const {
  if (!planner_) return absl::FailedPreconditionError("ReadKvSlot before AllocateKvCache");
  if (layer < 0 || layer >= config_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is outside [0, ", config_.n_layers, ")"));
  }
  RETURN_IF_ERROR(CheckKvSlot(kv_spec_, block, slot, "slot"));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  const size_t kv_dim = config_.kv_dim(), bytes = kv_dim * TypeBytes(type_);
  const size_t offset = (static_cast<size_t>(block) * kv_spec_.block_size + slot) * bytes;
  std::vector<uint8_t> raw(bytes);
  k->resize(kv_dim);
  v->resize(kv_dim);
  for (auto [cache, out] : {std::pair{KLayer(layer), k}, std::pair{VLayer(layer), v}}) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(raw.data(), static_cast<const uint8_t*>(cache) + offset, bytes,
                                         cudaMemcpyDeviceToHost, stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    ConvertToFloats(raw.data(), type_, absl::MakeSpan(*out));
  }
  return absl::OkStatus();
}

}  // namespace

int VisibleDevices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options) {
  ASSIGN_OR_RETURN(const WeightType type, ParseWeightType(options.weights));
  if (!(options.gpu_memory_fraction > 0.0 && options.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--gpu-memory-fraction must be in (0, 1], got %g", options.gpu_memory_fraction));
  }
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("--device cuda: no usable GPU: ", cudaGetErrorName(error), " (",
                                               cudaGetErrorString(error), "); --device auto or cpu runs on the CPU"));
  }
  if (count == 0) {
    return absl::UnavailableError(
        "--device cuda: no GPU is visible to this process; --device auto or cpu runs on the CPU");
  }
  auto backend = std::make_unique<CudaBackend>(options, type);
  RETURN_IF_ERROR(backend->Init());
  return backend;
}

}  // namespace medusa::kernels::cuda
