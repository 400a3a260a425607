#pragma once
// The one small interface every compute backend (CPU, CUDA) implements.
//
// A backend owns the model weights and the KV cache storage in its own memory.
// The engine owns the bookkeeping: which blocks belong to which sequence (block
// tables), and what each token of a batch attends to. A forward pass takes any
// mix of tokens from many sequences: prefill chunks, single decode tokens and
// (for Medusa) trees of candidate tokens.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/model/config.h"
#include "kernels/model/medusa_heads_weights.h"
#include "kernels/model/weights.h"
#include "kernels/softmax_stats.h"

namespace medusa::kernels {

// Geometry of the paged KV cache. Each block holds `block_size` token slots of
// K and V for every layer.
struct KvCacheSpec {
  int num_blocks = 0;
  int block_size = 16;
};

// One token of a forward batch.
//
// Attention rule: the token attends to the logical cache indices
// [0, attend_prefix) of its sequence, plus the indices listed in
// batch.extra_indices[extra_begin, extra_begin + extra_count).
// Every token's own K/V is written at `kv_index` before any attention runs, so
// a causal prefill token uses attend_prefix = kv_index + 1, and a Medusa tree
// node at kv_index = ctx + j uses attend_prefix = ctx with its ancestors and
// itself as extras.
struct BatchToken {
  int32_t token = 0;
  int32_t position = 0;       // RoPE position
  int32_t seq = 0;            // index into ForwardBatch::block_tables
  int32_t kv_index = 0;       // logical slot (in the sequence) receiving this token's K/V
  int32_t attend_prefix = 0;
  int32_t extra_begin = 0;
  int32_t extra_count = 0;
};

// An output row's tempered softmax summary, asked for in ForwardBatch::row_stats.
struct RowStatsQuery {
  int32_t output_row = 0;    // index into ForwardBatch::output_rows
  float temperature = 1.0f;  // > 0
};

// The logit of `token` in an output row, asked for in ForwardBatch::logit_queries.
struct LogitQuery {
  int32_t output_row = 0;  // index into ForwardBatch::output_rows
  int32_t token = 0;
};

struct ForwardBatch {
  std::vector<BatchToken> tokens;
  // Per sequence: physical block ids, in logical order. Logical index i lives in
  // block block_tables[seq][i / block_size], slot i % block_size.
  std::vector<absl::Span<const int32_t>> block_tables;
  std::vector<int32_t> extra_indices;
  // Rows (indices into tokens) whose outputs are wanted, in the order returned.
  std::vector<int32_t> output_rows;
  bool want_logits = true;   // classifier outputs for output_rows
  bool want_hidden = false;  // final-normed hidden states for output_rows (Medusa heads)
  // Each output row's greedy token: its largest logit's id (the first on ties), without
  // copying the logits back (a GPU computes it on the device).
  bool want_argmax = false;
  // What a sampling step reads instead of whole rows (typical acceptance): the softmax
  // summaries of some output rows and single logits. A GPU computes them on the device and
  // copies back only these; the one row a token is then drawn from comes from
  // Backend::ReadOutputLogits.
  std::vector<RowStatsQuery> row_stats;
  std::vector<LogitQuery> logit_queries;

  void Clear() {
    tokens.clear();
    block_tables.clear();
    extra_indices.clear();
    output_rows.clear();
    row_stats.clear();
    logit_queries.clear();
  }
};

struct ForwardResult {
  std::vector<float> logits;            // [output_rows.size(), vocab_size]
  std::vector<float> hidden;            // [output_rows.size(), dim]
  std::vector<int32_t> argmax;          // [output_rows.size()]
  std::vector<SoftmaxStats> row_stats;  // [row_stats.size()], in the batch's order
  std::vector<float> queried_logits;    // [logit_queries.size()], in the batch's order
};

// A copy of one KV slot to another (all layers), for KV compaction.
struct KvSlotCopy {
  int32_t src_block, src_slot, dst_block, dst_slot;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;
  // What the speed of this backend depends on, as one line (device, instruction set,
  // threads, processor model): measurements taken under another id do not apply here.
  virtual std::string MachineId() const = 0;

  // Takes the weights (moved: the CPU backend keeps them, others upload and drop them).
  virtual absl::Status LoadWeights(const ModelConfig& config, ModelWeights weights) = 0;
  // Allocates KV storage. Must be called after LoadWeights.
  virtual absl::Status AllocateKvCache(const KvCacheSpec& spec) = 0;
  // Bytes one KV block takes (all layers, K and V), for sizing the cache from a budget.
  virtual size_t KvBytesPerBlock(int block_size) const = 0;
  // KV blocks of `block_size` tokens to allocate for a budget of `budget_bytes` (0: the
  // backend's default), called after LoadWeights. By default the budget over KvBytesPerBlock,
  // 512 MiB when 0; a GPU takes what BackendOptions::gpu_memory_fraction of its memory leaves
  // after the weights and scratch, no more than a nonzero budget. ResourceExhausted (or
  // InvalidArgument for a budget) when not one block fits.
  virtual absl::StatusOr<int> KvBlocksFor(int64_t budget_bytes, int block_size) const;

  // Runs the batch through the model. Returns InvalidArgument for a malformed batch.
  virtual absl::Status Forward(const ForwardBatch& batch, ForwardResult* result) = 0;
  // The logits of output row `output_row` (an index into output_rows) of the last Forward,
  // which keeps them until the next whether or not it returned them: the one row a sampling
  // step draws its token from. FailedPrecondition before any Forward with outputs,
  // InvalidArgument for a row outside the last one's.
  virtual absl::Status ReadOutputLogits(int output_row, std::vector<float>* logits) = 0;

  // Copies KV slots (every layer, K and V). Sources are read before any destination is written.
  virtual absl::Status CopyKvSlots(absl::Span<const KvSlotCopy> copies) = 0;
  // Reads one slot's K and V of one layer (for tests): each kv_dim floats.
  virtual absl::Status ReadKvSlot(int layer, int block, int slot, std::vector<float>* k,
                                  std::vector<float>* v) const = 0;

  // Medusa heads (ResBlocks then a vocabulary projection, the heads' own or the
  // model's classifier). Replaces any heads loaded before. Call after LoadWeights.
  virtual absl::Status LoadMedusaHeads(MedusaHeadsWeights heads) = 0;
  virtual int num_medusa_heads() const = 0;
  // Logits of the first `num_heads` heads for `rows` final-normed hidden states
  // (hidden: [rows, dim], as ForwardResult::hidden) into head_logits
  // [rows, num_heads, draft], over the heads' draft vocabulary: entry i of a row is token
  // medusa_draft_vocab()[i], or token i when the heads have no draft vocabulary (draft =
  // vocab). A tree needs only as many heads as it is deep.
  virtual absl::Status MedusaHeadLogits(absl::Span<const float> hidden, int rows, int num_heads,
                                        std::vector<float>* head_logits) = 0;
  // The candidates a tree takes from the heads: for each row of `hidden` ([rows, dim]) and each
  // of the first topk.size() heads, the token ids of head h's topk[h] largest logits, largest
  // first (ties: the lower draft entry), into ids [rows][sum of topk]. A GPU selects them on
  // the device and copies back only the ids. InvalidArgument for more heads than are loaded
  // or a k outside [1, draft size].
  virtual absl::Status MedusaHeadTopK(absl::Span<const float> hidden, int rows, absl::Span<const int> topk,
                                      std::vector<int32_t>* ids) = 0;
  // Whether the loaded heads are Medusa heads (MedusaHeadLogits, MedusaHeadTopK) or sequentially
  // dependent Hydra heads (HydraHeadLogits; the Medusa calls refuse them).
  virtual HeadKind medusa_head_kind() const = 0;
  // Hydra head `head`'s logits [rows, draft] (entries as MedusaHeadLogits') for `rows` tree paths:
  // hidden [rows, dim] (the sequence's final-normed hidden state, repeated per path) and
  // path_tokens [rows, head + 1] (the base model's token, then the draft tokens of heads
  // 0 .. head-1 on the path). InvalidArgument for a head not loaded or a token outside the
  // vocabulary.
  virtual absl::Status HydraHeadLogits(absl::Span<const float> hidden, absl::Span<const int32_t> path_tokens, int rows,
                                       int head, std::vector<float>* head_logits) = 0;
  // The loaded heads' draft vocabulary (MedusaHeadsWeights::draft_vocab); empty: every token.
  virtual absl::Span<const int32_t> medusa_draft_vocab() const = 0;

  virtual const ModelConfig& config() const = 0;
};

// The rules every backend checks a batch against: tokens inside the vocabulary, block ids
// inside the cache, KV indices and attention rules inside their sequence's blocks, output
// rows inside the batch, queries on output rows (tokens inside the vocabulary, temperatures
// positive). InvalidArgument naming the field otherwise.
absl::Status ValidateBatch(const ForwardBatch& batch, int vocab_size, const KvCacheSpec& kv);
// MedusaHeadTopK's arguments: at most `loaded_heads` heads, each k in [1, draft_size].
absl::Status CheckHeadTopK(absl::Span<const int> topk, int loaded_heads, int draft_size);
// InvalidArgument (naming `what`) unless (block, slot) lies inside the cache.
absl::Status CheckKvSlot(const KvCacheSpec& kv, int32_t block, int32_t slot, const char* what);

struct BackendOptions {
  // "cpu", "cuda", or "auto": cuda where this build has it and a GPU is visible, else cpu.
  std::string device = "cpu";
  int threads = 0;  // CPU threads; 0: all cores
  // How weights are kept. CPU: a WeightMode (weight_format.h): "auto" (as the
  // file stores them), "f32" (the reference), "f16", "bf16", "q8_0", "q4_0" or
  // "q4_1". GPU: how it stores weights and KV: "auto" (f16), "f32" (full fp32
  // products: equality tests against the CPU), "f16" or "bf16".
  std::string weights = "auto";
  // The most of the GPU's memory in use (by anyone) once the KV pool is allocated, in (0, 1].
  double gpu_memory_fraction = 0.9;
  // Tokens one forward pass is expected to carry at most: a GPU reserves their scratch before
  // the KV pool takes the rest (a larger pass still runs when memory is left).
  int reserve_step_tokens = 1024;
  // GPU: replay decode and Medusa steps as captured CUDA graphs (off: launch every kernel).
  bool cuda_graphs = true;
};

// The default KV budget when none is given (Backend::KvBlocksFor).
inline constexpr int64_t kDefaultKvBudgetBytes = 512ll << 20;

// Whether this build has a CUDA backend and a GPU is visible to it.
bool CudaDeviceVisible();

// Creates the named backend; NotFound/Unavailable/InvalidArgument with a clear message otherwise.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

}  // namespace medusa::kernels
