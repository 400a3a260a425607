#pragma once
// Medusa heads on the CPU: per head, ResBlocks h <- h + SiLU(W h + b), then a
// vocabulary projection. Heads sharing the model's classifier go through it in
// one product (the classifier is read once for every head), which is most of
// the heads' cost on a memory-bound CPU.

#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/medusa/heads.h"
#include "kernels/cpu/aligned_vector.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace medusa::kernels::cpu {

class MedusaHeadsCpu {
 public:
  // Packs the weights; `classifier` (the model's, kept alive by the caller) serves
  // heads without their own projection.
  absl::Status Load(const MedusaHeadsWeights& weights, int dim, int vocab, const PackedMatrix* classifier);
  int num_heads() const { return static_cast<int>(heads_.size()); }

  // head_logits [rows, num_heads, vocab] for hidden [rows, dim].
  absl::Status Compute(absl::Span<const float> hidden, int rows, int num_heads, ThreadPool* pool,
                       std::vector<float>* head_logits);

 private:
  struct Block {
    PackedMatrix weight;  // [dim, dim]
    AlignedFloats bias;   // [dim]
  };
  struct Head {
    std::vector<Block> blocks;
    PackedMatrix projection;  // empty: the model's classifier
  };
  int dim_ = 0;
  int vocab_ = 0;
  const PackedMatrix* classifier_ = nullptr;
  std::vector<Head> heads_;
  AlignedFloats x_;  // [rows, heads, dim]: each head's residual stream
  AlignedFloats y_;  // [rows, dim]: one block's product
};

}  // namespace medusa::kernels::cpu
