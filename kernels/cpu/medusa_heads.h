#pragma once
// Medusa heads on the CPU: per head, ResBlocks h <- h + SiLU(W h + b), then a
// vocabulary projection. Heads sharing the model's classifier go through it in
// one product (the classifier is read once for every head), which is most of
// the heads' cost on a memory-bound CPU. With a draft vocabulary the projections
// keep only its rows (copied at load), so a step reads a fraction of the classifier.
// Hydra heads (sequentially dependent) are evaluated per tree path instead (ComputeHydra):
// head k's first block reads h and the embeddings of the path's k + 1 tokens.

#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cpu/matmul.h"
#include "kernels/math/aligned_vector.h"
#include "kernels/math/thread_pool.h"
#include "kernels/model/medusa_heads_weights.h"
#include "kernels/model/weight_format.h"

namespace medusa::kernels::cpu {

class MedusaHeadsCpu {
 public:
  // Checks (MedusaHeadsWeights::ValidateFor) and packs the weights, the residual blocks'
  // as `block_type`; `classifier` (the model's, kept alive by the caller) serves heads
  // without their own projection, `embedding` (the model's input embeddings, kept alive by the
  // caller; may be the classifier when tied) gives Hydra heads their tokens' rows.
  absl::Status Load(const MedusaHeadsWeights& weights, int dim, int vocab, const PackedMatrix* classifier,
                    WeightType block_type = WeightType::kF32, const PackedMatrix* embedding = nullptr);
  // The type a model's heads' residual blocks take beside its classifier of type `classifier`:
  // a quantized model's heads are Q8_0 (int8 products like the model's, at a quarter of
  // float32's bytes: with four heads, float32 blocks are a tenth of a Q4_1 step's reads), a
  // 16-bit model's 16-bit, a float32 model's float32. Float32 where `dim` is not whole
  // 32-value blocks.
  static WeightType BlockTypeFor(WeightType classifier, int dim);
  int num_heads() const { return static_cast<int>(heads_.size()); }
  HeadKind kind() const { return kind_; }
  absl::Span<const int32_t> draft_vocab() const { return draft_vocab_; }

  // head_logits [rows, num_heads, draft size] for hidden [rows, dim] (Backend::MedusaHeadLogits).
  absl::Status Compute(absl::Span<const float> hidden, int rows, int num_heads, math::ThreadPool* pool,
                       std::vector<float>* head_logits);
  // Hydra head `head`'s logits [rows, draft size] (Backend::HydraHeadLogits) for hidden
  // [rows, dim] and path_tokens [rows, head + 1].
  absl::Status ComputeHydra(absl::Span<const float> hidden, absl::Span<const int32_t> path_tokens, int rows, int head,
                            math::ThreadPool* pool, std::vector<float>* head_logits);

 private:
  struct Block {
    PackedMatrix weight;  // [dim, dim]
    math::AlignedFloats bias;   // [dim]
  };
  struct Head {
    std::vector<Block> blocks;
    PackedMatrix projection;  // empty: the shared projection below
  };
  // x[r] += SiLU(y[r] + bias) for `rows` rows (x rows `ldx` apart, y rows dim apart).
  void AddSiluResidual(float* x, int rows, int ldx, const float* y, const math::AlignedFloats& bias) const;
  // The heads' logits of `rows` final states (rows `ldx` apart) through head `head`'s projection
  // (or the shared one), rows `ldy` apart.
  void Project(const float* x, int rows, int ldx, int head, float* logits, int ldy, math::ThreadPool* pool) const;

  HeadKind kind_ = HeadKind::kMedusa;
  int dim_ = 0;
  int vocab_ = 0;
  int out_ = 0;  // logits per head: the draft vocabulary's size, or vocab_
  std::vector<int32_t> draft_vocab_;
  // Heads without their own projection: the model's classifier, or its draft rows.
  const PackedMatrix* shared_projection_ = nullptr;
  const PackedMatrix* embedding_ = nullptr;  // Hydra heads' token rows
  PackedMatrix draft_classifier_;
  std::vector<Head> heads_;
  math::AlignedFloats x_;  // [rows, heads, dim]: each head's residual stream
  math::AlignedFloats y_;  // [rows, dim]: one block's product
  math::AlignedFloats u_;  // Hydra: [rows, (head + 2) * dim], the first block's input
};

}  // namespace medusa::kernels::cpu
