#include "kernels/cpu/cpu_backend.h"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/layer_ops.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/medusa_heads.h"
#include "kernels/math/aligned_vector.h"
#include "kernels/math/simd.h"
#include "kernels/math/thread_pool.h"
#include "kernels/math/zeroed_buffer.h"
#include "kernels/model/rope.h"
#include "kernels/softmax_stats.h"
#include "kernels/topk.h"

namespace medusa::kernels {
namespace {


// One layer, repacked: Q, K and V stacked into one matrix and gate and up into another,
// so each becomes one product (bigger, fewer calls) instead of three or two; the matrices in
// the products' packed layout (matmul.h).
struct CpuLayer {
  math::AlignedFloats attn_norm;     // [dim]
  cpu::PackedMatrix wqkv;      // [q_dim + 2 * kv_dim, dim]
  cpu::PackedMatrix wo;        // [dim, q_dim]
  math::AlignedFloats ffn_norm;      // [dim]
  cpu::PackedMatrix w_gate_up; // [2 * hidden_dim, dim]
  cpu::PackedMatrix w_down;    // [dim, hidden_dim]
};

// Moves `parts` one after another into one aligned buffer, releasing each source as it goes
// so peak memory stays near the model size.
math::AlignedFloats Concatenate(std::initializer_list<std::vector<float>*> parts) {
  size_t total = 0;
  for (const auto* p : parts) total += p->size();
  math::AlignedFloats out;
  out.reserve(total);
  for (auto* p : parts) {
    out.insert(out.end(), p->begin(), p->end());
    std::vector<float>().swap(*p);
  }
  return out;
}

// Packs the [out, in] matrix made of `parts` stacked, releasing each as it
// goes. Parts of different types are stacked in float32 (a GGUF file may mix
// types within a layer).
cpu::PackedMatrix Pack(std::initializer_list<WeightMatrix*> parts, int in) {
  WeightType type = (*parts.begin())->type;
  for (const WeightMatrix* p : parts) {
    if (p->type != type) type = WeightType::kF32;
  }
  std::vector<uint8_t> stacked;
  int out = 0;
  for (WeightMatrix* p : parts) {
    const int rows =
        static_cast<int>(p->type == WeightType::kF32 ? p->values.size() / in : p->bytes.size() / RowBytes(p->type, in));
    p->ConvertTo(type, rows, in);
    if (type == WeightType::kF32) {
      const auto* bytes = reinterpret_cast<const uint8_t*>(p->values.data());
      stacked.insert(stacked.end(), bytes, bytes + p->values.size() * sizeof(float));
    } else {
      stacked.insert(stacked.end(), p->bytes.begin(), p->bytes.end());
    }
    *p = WeightMatrix();
    out += rows;
  }
  return cpu::PackedMatrix(type, stacked.data(), out, in);
}

// The processor's model name (/proc/cpuinfo), or "unknown processor".
std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "unknown processor";
}

// Cores this process may run on (its affinity mask), at least 1.
int UsableCores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : pool_(threads > 0 ? threads : UsableCores()) {}

  std::string Name() const override { return "cpu"; }
  // The weights' types are part of it: a step's cost, and so the best tree, depends on them.
  std::string MachineId() const override {
    return absl::StrCat("cpu ", math::simd::kName, ", ", weight_types_.empty() ? "" : weight_types_ + " weights, ",
                        pool_.size(), " threads, ", CpuModelName());
  }
  const ModelConfig& config() const override { return config_; }

  absl::Status LoadMedusaHeads(MedusaHeadsWeights heads) override {
    if (!loaded_) return absl::FailedPreconditionError("LoadMedusaHeads before LoadWeights");
    return medusa_heads_.Load(heads, config_.dim, config_.vocab_size, &classifier_,
                              cpu::MedusaHeadsCpu::BlockTypeFor(classifier_.type(), config_.dim),
                              embedding_.empty() ? &classifier_ : &embedding_);
  }
  int num_medusa_heads() const override { return medusa_heads_.num_heads(); }
  HeadKind medusa_head_kind() const override { return medusa_heads_.kind(); }
  absl::Status HydraHeadLogits(absl::Span<const float> hidden, absl::Span<const int32_t> path_tokens, int rows,
                               int head, std::vector<float>* head_logits) override {
    return medusa_heads_.ComputeHydra(hidden, path_tokens, rows, head, &pool_, head_logits);
  }
  absl::Span<const int32_t> medusa_draft_vocab() const override { return medusa_heads_.draft_vocab(); }
  absl::Status MedusaHeadLogits(absl::Span<const float> hidden, int rows, int num_heads,
                                std::vector<float>* head_logits) override {
    return medusa_heads_.Compute(hidden, rows, num_heads, &pool_, head_logits);
  }
  absl::Status MedusaHeadTopK(absl::Span<const float> hidden, int rows, absl::Span<const int> topk,
                              std::vector<int32_t>* ids) override {
    const absl::Span<const int32_t> draft = medusa_heads_.draft_vocab();
    const int width = draft.empty() ? config_.vocab_size : static_cast<int>(draft.size());
    RETURN_IF_ERROR(CheckHeadTopK(topk, medusa_heads_.num_heads(), width));
    RETURN_IF_ERROR(medusa_heads_.Compute(hidden, rows, static_cast<int>(topk.size()), &pool_, &head_logits_));
    SelectHeadTopK(head_logits_, rows, width, topk, draft, &topk_, ids);
    return absl::OkStatus();
  }

  absl::Status LoadWeights(const ModelConfig& config, ModelWeights weights) override;
  absl::Status AllocateKvCache(const KvCacheSpec& spec) override;
  size_t KvBytesPerBlock(int block_size) const override {
    return static_cast<size_t>(config_.n_layers) * 2 * config_.kv_dim() * std::max(block_size, 0) * sizeof(float);
  }
  absl::Status Forward(const ForwardBatch& batch, ForwardResult* result) override;
  absl::Status ReadOutputLogits(int output_row, std::vector<float>* logits) override;
  absl::Status CopyKvSlots(absl::Span<const KvSlotCopy> copies) override;
  absl::Status ReadKvSlot(int layer, int block, int slot, std::vector<float>* k,
                          std::vector<float>* v) const override;

 private:
  std::string WeightTypesOf() const;
  void EnsureScratch(int rows);
  void RunLayer(const ForwardBatch& batch, int layer, bool last);
  int AttentionBlock(const ForwardBatch& batch, int layer, bool last);
  void MlpBlock(int layer, int rows);
  void WriteKv(const ForwardBatch& batch, int layer);
  void ComputeOutputs(const ForwardBatch& batch, ForwardResult* result);

  cpu::KvLayout KvLayout() const {
    return cpu::KvLayout{kv_spec_.block_size, config_.n_kv_heads, config_.head_dim};
  }
  float* KLayer(int layer) { return k_cache_.data() + layer * kv_layer_floats_; }
  float* VLayer(int layer) { return v_cache_.data() + layer * kv_layer_floats_; }
  const float* KLayer(int layer) const { return k_cache_.data() + layer * kv_layer_floats_; }
  const float* VLayer(int layer) const { return v_cache_.data() + layer * kv_layer_floats_; }
  int QkvDim() const { return config_.q_dim() + 2 * config_.kv_dim(); }

  math::ThreadPool pool_;
  bool loaded_ = false;
  ModelConfig config_;
  cpu::PackedMatrix embedding_;         // [vocab, dim]; empty when tied (rows come from classifier_)
  math::AlignedFloats final_norm_;      // [dim]
  cpu::PackedMatrix classifier_;  // [vocab, dim]
  std::vector<CpuLayer> layers_;
  std::string weight_types_;              // the matrices' types: "q4_1+q8_0"
  std::vector<double> rope_frequencies_;  // [head_dim / 2]
  cpu::MedusaHeadsCpu medusa_heads_;
  std::vector<float> head_logits_;  // MedusaHeadTopK's
  TopK topk_;

  KvCacheSpec kv_spec_;
  size_t kv_layer_floats_ = 0;  // floats per layer in each of k_cache_ / v_cache_
  math::ZeroedFloats k_cache_;  // per layer, cpu::KvLayout: K transposed per (block, kv head)
  math::ZeroedFloats v_cache_;  // per layer, cpu::KvLayout: V row-wise per (block, kv head)

  // Scratch, grown to the largest batch seen (no allocation per call after that).
  int scratch_rows_ = 0;
  math::AlignedFloats x_;        // residual stream [rows, dim]
  math::AlignedFloats xb_;       // normed input of a sub-layer [rows, dim]
  math::AlignedFloats qkv_;      // [rows, q_dim + 2 kv_dim]
  math::AlignedFloats att_;      // attention output [rows, q_dim]
  math::AlignedFloats gate_up_;  // [rows, 2 hidden]
  math::AlignedFloats act_;      // [rows, hidden]
  math::AlignedFloats rope_cos_, rope_sin_;  // [rows, head_dim / 2]
  std::vector<cpu::AttentionScratch> attention_scratch_;
  std::vector<float> copy_staging_;
  int out_rows_ = 0;  // rows carried through the last layer (the batch's output rows)
  std::vector<float> logits_;  // the last forward's output rows' logits [logits_rows_, vocab]
  int logits_rows_ = 0;
};

absl::Status CpuBackend::LoadWeights(const ModelConfig& config, ModelWeights weights) {
  RETURN_IF_ERROR(ValidateWeights(config, weights));
  // Drop any previous model and cache: the geometry may change.
  loaded_ = false;
  medusa_heads_ = cpu::MedusaHeadsCpu();  // heads belong to a model
  k_cache_.Release();
  v_cache_.Release();
  kv_spec_ = KvCacheSpec{};
  scratch_rows_ = 0;
  config_ = config;
  rope_frequencies_ = RopeFrequencies(config);
  final_norm_ = Concatenate({&weights.final_norm});
  // A tied model keeps one copy, packed for the classifier; its rows are
  // unpacked on lookup, as are an untied model's embedding rows (kept packed in
  // its own type, not as float32).
  if (weights.classifier.empty()) {
    classifier_ = Pack({&weights.token_embedding}, config.dim);
    embedding_ = cpu::PackedMatrix();
  } else {
    embedding_ = Pack({&weights.token_embedding}, config.dim);
    classifier_ = Pack({&weights.classifier}, config.dim);
  }
  layers_.clear();
  layers_.reserve(config.n_layers);
  for (LayerWeights& L : weights.layers) {
    CpuLayer c;
    c.attn_norm = Concatenate({&L.attn_norm});
    c.wqkv = Pack({&L.wq, &L.wk, &L.wv}, config.dim);
    c.wo = Pack({&L.wo}, config.q_dim());
    c.ffn_norm = Concatenate({&L.ffn_norm});
    c.w_gate_up = Pack({&L.w_gate, &L.w_up}, config.dim);
    c.w_down = Pack({&L.w_down}, config.hidden_dim);
    layers_.push_back(std::move(c));
  }
  weight_types_ = WeightTypesOf();
  loaded_ = true;
  return absl::OkStatus();
}

std::string CpuBackend::WeightTypesOf() const {
  std::set<std::string> types = {WeightTypeName(classifier_.type())};
  if (!embedding_.empty()) types.insert(WeightTypeName(embedding_.type()));
  for (const CpuLayer& L : layers_) {
    for (const cpu::PackedMatrix* m : {&L.wqkv, &L.wo, &L.w_gate_up, &L.w_down})
      types.insert(WeightTypeName(m->type()));
  }
  return absl::StrJoin(types, "+");
}

absl::Status CpuBackend::AllocateKvCache(const KvCacheSpec& spec) {
  if (!loaded_) return absl::FailedPreconditionError("AllocateKvCache before LoadWeights");
  if (spec.num_blocks <= 0 || spec.block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("KvCacheSpec needs positive num_blocks and block_size, got ",
                                                   spec.num_blocks, " and ", spec.block_size));
  }
  const size_t per_layer = static_cast<size_t>(spec.num_blocks) * spec.block_size * config_.kv_dim();
  if (per_layer > std::numeric_limits<size_t>::max() / sizeof(float) / 2 / config_.n_layers) {
    return absl::InvalidArgumentError("KvCacheSpec is too large to address");
  }
  // Zeroed, so a slot that was never written reads as zeros rather than garbage; resident
  // only once written.
  if (!k_cache_.Allocate(per_layer * config_.n_layers) || !v_cache_.Allocate(per_layer * config_.n_layers)) {
    k_cache_.Release();
    v_cache_.Release();
    kv_spec_ = KvCacheSpec{};
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate a KV cache of ", 2 * per_layer * config_.n_layers * sizeof(float), " bytes"));
  }
  kv_spec_ = spec;
  kv_layer_floats_ = per_layer;
  // A rule attends to at most the cache's slots, plus tree extras: reserve that much now.
  constexpr int kExtrasReserve = 256;
  const int64_t slots = static_cast<int64_t>(spec.num_blocks) * spec.block_size;
  cpu::ReserveAttentionScratch(static_cast<int>(std::min<int64_t>(slots + kExtrasReserve, 1 << 30)),
                               config_.head_dim, pool_.size(), &attention_scratch_);
  return absl::OkStatus();
}

void CpuBackend::EnsureScratch(int rows) {
  if (rows <= scratch_rows_) return;
  // Grow with headroom so a slowly growing batch does not reallocate every step.
  rows = std::max(rows, scratch_rows_ + scratch_rows_ / 2);
  const size_t r = rows;
  x_.resize(r * config_.dim);
  xb_.resize(r * config_.dim);
  qkv_.resize(r * QkvDim());
  att_.resize(r * config_.q_dim());
  gate_up_.resize(r * 2 * config_.hidden_dim);
  act_.resize(r * config_.hidden_dim);
  rope_cos_.resize(r * config_.head_dim / 2);
  rope_sin_.resize(r * config_.head_dim / 2);
  scratch_rows_ = rows;
}

void CpuBackend::WriteKv(const ForwardBatch& batch, int layer) {
  const cpu::KvLayout layout = KvLayout();
  const int head_dim = config_.head_dim;
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    const BatchToken& t = batch.tokens[i];
    const int32_t block = batch.block_tables[t.seq][t.kv_index / kv_spec_.block_size];
    const int slot = t.kv_index % kv_spec_.block_size;
    const float* k = qkv_.data() + i * QkvDim() + config_.q_dim();
    const float* v = k + config_.kv_dim();
    for (int h = 0; h < config_.n_kv_heads; ++h) {
      layout.WriteSlot(KLayer(layer), VLayer(layer), block, slot, h, k + h * head_dim, v + h * head_dim);
    }
  }
}

// One transformer layer on x_.
void CpuBackend::RunLayer(const ForwardBatch& batch, int layer, bool last) {
  const int rows = AttentionBlock(batch, layer, last);
  if (rows > 0) MlpBlock(layer, rows);
}

// x += attention(norm(x)) Wo. Writes every token's K/V; in the last layer only the output
// rows matter after that, so attention runs on those alone, gathered to the top of x_.
// Returns the number of rows x_ now carries.
int CpuBackend::AttentionBlock(const ForwardBatch& batch, int layer, bool last) {
  const CpuLayer& L = layers_[layer];
  const int n = static_cast<int>(batch.tokens.size());
  const int dim = config_.dim, qkv_dim = QkvDim(), half = config_.head_dim / 2;

  cpu::RmsNorm(x_.data(), dim, L.attn_norm.data(), n, dim, config_.rms_eps, xb_.data(), dim, &pool_);
  cpu::Linear(xb_.data(), n, dim, L.wqkv, qkv_.data(), qkv_dim, false, &pool_);
  const int rope_heads = config_.n_heads + config_.n_kv_heads;  // Q heads then K heads, contiguous
  pool_.ForRanges(n, static_cast<long long>(n) * rope_heads * config_.head_dim, 1 << 14, [&](int begin, int end) {
    for (int i = begin; i < end; ++i) {
      cpu::ApplyRope(qkv_.data() + static_cast<size_t>(i) * qkv_dim, rope_heads, config_.head_dim,
                     rope_cos_.data() + static_cast<size_t>(i) * half, rope_sin_.data() + static_cast<size_t>(i) * half);
    }
  });
  WriteKv(batch, layer);

  cpu::AttentionArgs args;
  args.batch = &batch;
  args.n_rows = n;
  if (last) {
    args.rows = batch.output_rows.data();
    args.n_rows = out_rows_;
    if (out_rows_ == 0) return 0;
    // Output order, rows may repeat: in place is unsafe, so stage through xb_.
    for (int r = 0; r < out_rows_; ++r) {
      std::memcpy(xb_.data() + static_cast<size_t>(r) * dim, x_.data() + static_cast<size_t>(batch.output_rows[r]) * dim,
                  dim * sizeof(float));
    }
    std::memcpy(x_.data(), xb_.data(), static_cast<size_t>(out_rows_) * dim * sizeof(float));
  }
  args.q = qkv_.data();
  args.q_stride = qkv_dim;
  args.out = att_.data();
  args.out_stride = config_.q_dim();
  args.n_heads = config_.n_heads;
  args.kv = cpu::KvLayerView{KvLayout(), KLayer(layer), VLayer(layer)};
  cpu::PagedAttention(args, &pool_, &attention_scratch_);
  cpu::Linear(att_.data(), args.n_rows, config_.q_dim(), L.wo, x_.data(), dim, true, &pool_);
  return args.n_rows;
}

// x += down(silu(gate(norm(x))) * up(norm(x))) for the first `rows` rows of x_.
void CpuBackend::MlpBlock(int layer, int rows) {
  const CpuLayer& L = layers_[layer];
  const int dim = config_.dim, hidden = config_.hidden_dim;
  cpu::RmsNorm(x_.data(), dim, L.ffn_norm.data(), rows, dim, config_.rms_eps, xb_.data(), dim, &pool_);
  cpu::Linear(xb_.data(), rows, dim, L.w_gate_up, gate_up_.data(), 2 * hidden, false, &pool_);
  cpu::SwiGlu(gate_up_.data(), rows, hidden, act_.data(), &pool_);
  cpu::Linear(act_.data(), rows, hidden, L.w_down, x_.data(), dim, true, &pool_);
}

// Final norm and classifier on the output rows, which the last layer left at the top of x_.
void CpuBackend::ComputeOutputs(const ForwardBatch& batch, ForwardResult* result) {
  const int dim = config_.dim, m = out_rows_;
  cpu::RmsNorm(x_.data(), dim, final_norm_.data(), m, dim, config_.rms_eps, xb_.data(), dim, &pool_);
  if (batch.want_hidden) {
    result->hidden.assign(xb_.begin(), xb_.begin() + static_cast<size_t>(m) * dim);
  }
  const bool queries = !batch.row_stats.empty() || !batch.logit_queries.empty();
  if (!batch.want_logits && !batch.want_argmax && !queries) return;
  // The logits stay in logits_ until the next forward (ReadOutputLogits). resize, not
  // clear + resize: the product overwrites every value, no need to zero them.
  const size_t vocab = config_.vocab_size;
  logits_.resize(m * vocab);
  logits_rows_ = m;
  cpu::Linear(xb_.data(), m, dim, classifier_, logits_.data(), config_.vocab_size, false, &pool_);
  auto row = [&](int r) { return absl::MakeConstSpan(logits_).subspan(r * vocab, vocab); };
  if (batch.want_argmax) {
    result->argmax.resize(m);
    for (int r = 0; r < m; ++r) result->argmax[r] = Argmax(row(r));
  }
  result->row_stats.resize(batch.row_stats.size());
  for (size_t q = 0; q < batch.row_stats.size(); ++q) {
    result->row_stats[q] = TemperedSoftmaxStats(row(batch.row_stats[q].output_row), batch.row_stats[q].temperature);
  }
  result->queried_logits.resize(batch.logit_queries.size());
  for (size_t q = 0; q < batch.logit_queries.size(); ++q) {
    result->queried_logits[q] = row(batch.logit_queries[q].output_row)[batch.logit_queries[q].token];
  }
  if (batch.want_logits) result->logits.assign(logits_.begin(), logits_.end());
}

absl::Status CpuBackend::ReadOutputLogits(int output_row, std::vector<float>* logits) {
  if (logits_rows_ == 0) return absl::FailedPreconditionError("ReadOutputLogits: the last forward made no logits");
  if (output_row < 0 || output_row >= logits_rows_) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadOutputLogits: output row ", output_row, " is not in [0, ", logits_rows_, ")"));
  }
  const size_t vocab = config_.vocab_size;
  logits->assign(logits_.begin() + output_row * vocab, logits_.begin() + (output_row + 1) * vocab);
  return absl::OkStatus();
}

absl::Status CpuBackend::Forward(const ForwardBatch& batch, ForwardResult* result) {
  if (!loaded_) return absl::FailedPreconditionError("Forward before LoadWeights");
  if (k_cache_.empty()) return absl::FailedPreconditionError("Forward before AllocateKvCache");
  if (result == nullptr) return absl::InvalidArgumentError("Forward needs a result");
  RETURN_IF_ERROR(ValidateBatch(batch, config_.vocab_size, kv_spec_));
  const int n = static_cast<int>(batch.tokens.size());
  out_rows_ = n == 0 ? 0 : static_cast<int>(batch.output_rows.size());
  if (!batch.want_logits || out_rows_ == 0) result->logits.clear();
  if (!batch.want_hidden || out_rows_ == 0) result->hidden.clear();
  if (!batch.want_argmax || out_rows_ == 0) result->argmax.clear();
  result->row_stats.clear();
  result->queried_logits.clear();
  logits_rows_ = 0;
  if (n == 0) return absl::OkStatus();
  EnsureScratch(std::max(n, out_rows_));

  const int dim = config_.dim, half = config_.head_dim / 2;
  for (int i = 0; i < n; ++i) {
    const BatchToken& t = batch.tokens[i];
    float* row = x_.data() + static_cast<size_t>(i) * dim;
    (embedding_.empty() ? classifier_ : embedding_).CopyRow(t.token, row);
    cpu::RopeAngles(t.position, rope_frequencies_.data(), half, rope_cos_.data() + static_cast<size_t>(i) * half,
                    rope_sin_.data() + static_cast<size_t>(i) * half);
  }
  for (int l = 0; l < config_.n_layers; ++l) RunLayer(batch, l, l + 1 == config_.n_layers);
  if (out_rows_ > 0) ComputeOutputs(batch, result);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyKvSlots(absl::Span<const KvSlotCopy> copies) {
  if (k_cache_.empty()) return absl::FailedPreconditionError("CopyKvSlots before AllocateKvCache");
  for (const KvSlotCopy& c : copies) {
    RETURN_IF_ERROR(CheckKvSlot(kv_spec_, c.src_block, c.src_slot, "copy source"));
    RETURN_IF_ERROR(CheckKvSlot(kv_spec_, c.dst_block, c.dst_slot, "copy destination"));
  }
  // Stage every source (all layers, K then V per layer) before writing any destination.
  const cpu::KvLayout layout = KvLayout();
  const int head_dim = config_.head_dim, kv_dim = config_.kv_dim();
  const size_t per_copy = static_cast<size_t>(config_.n_layers) * 2 * kv_dim;
  if (copy_staging_.size() < per_copy * copies.size()) copy_staging_.resize(per_copy * copies.size());
  for (size_t c = 0; c < copies.size(); ++c) {
    for (int l = 0; l < config_.n_layers; ++l) {
      float* k = copy_staging_.data() + c * per_copy + static_cast<size_t>(l) * 2 * kv_dim;
      for (int h = 0; h < config_.n_kv_heads; ++h) {
        layout.ReadSlot(KLayer(l), VLayer(l), copies[c].src_block, copies[c].src_slot, h, k + h * head_dim,
                        k + kv_dim + h * head_dim);
      }
    }
  }
  for (size_t c = 0; c < copies.size(); ++c) {
    for (int l = 0; l < config_.n_layers; ++l) {
      const float* k = copy_staging_.data() + c * per_copy + static_cast<size_t>(l) * 2 * kv_dim;
      for (int h = 0; h < config_.n_kv_heads; ++h) {
        layout.WriteSlot(KLayer(l), VLayer(l), copies[c].dst_block, copies[c].dst_slot, h, k + h * head_dim,
                         k + kv_dim + h * head_dim);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::ReadKvSlot(int layer, int block, int slot, std::vector<float>* k,
                                    std::vector<float>* v) const {
  if (k_cache_.empty()) return absl::FailedPreconditionError("ReadKvSlot before AllocateKvCache");
  if (layer < 0 || layer >= config_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " is outside [0, ", config_.n_layers, ")"));
  }
  RETURN_IF_ERROR(CheckKvSlot(kv_spec_, block, slot, "slot"));
  const int head_dim = config_.head_dim;
  k->resize(config_.kv_dim());
  v->resize(config_.kv_dim());
  for (int h = 0; h < config_.n_kv_heads; ++h) {
    KvLayout().ReadSlot(KLayer(layer), VLayer(layer), block, slot, h, k->data() + h * head_dim, v->data() + h * head_dim);
  }
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace medusa::kernels
