#pragma once
// Medusa heads on the GPU: per head, ResBlocks h <- h + SiLU(W h + b), then a vocabulary
// projection (the head's own, or the model's classifier; with a draft vocabulary only its
// rows, gathered at load). Every product is the batch-invariant one (gemm.h): the heads see
// a few rows per step, and a row's candidates never depend on the rows beside it.

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/device_model.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa::kernels::cuda {

class MedusaHeadsCuda {
 public:
  // Checks (MedusaHeadsWeights::ValidateFor) and uploads the heads in `type`; `classifier`
  // (the model's, kept alive by the caller) serves heads without their own projection.
  absl::Status Load(MedusaHeadsWeights weights, int dim, int vocab, const DeviceMatrix* classifier, WeightType type);
  int num_heads() const { return static_cast<int>(heads_.size()); }
  absl::Span<const int32_t> draft_vocab() const { return draft_vocab_; }

  // head_logits [rows, num_heads, draft size] for hidden [rows, dim] (Backend::MedusaHeadLogits),
  // computed on `stream` and copied back.
  absl::Status Compute(absl::Span<const float> hidden, int rows, int num_heads, cudaStream_t stream,
                       std::vector<float>* head_logits);
  // Backend::MedusaHeadTopK: the logits stay on the device; only the chosen ids come back.
  absl::Status TopK(absl::Span<const float> hidden, int rows, absl::Span<const int> topk, cudaStream_t stream,
                    std::vector<int32_t>* ids);

 private:
  struct Block {
    DeviceMatrix weight;  // [dim, dim]
    DeviceBuffer bias;    // [dim] fp32
  };
  struct Head {
    std::vector<Block> blocks;
    DeviceMatrix projection;  // [out, dim]; empty: the shared projection
  };
  absl::Status Reserve(int rows, int num_heads);
  // Checks the arguments and enqueues the heads' logits into logits_.
  absl::Status EnqueueLogits(absl::Span<const float> hidden, int rows, int num_heads, cudaStream_t stream);
  const DeviceMatrix& shared_projection() const { return draft_classifier_.empty() ? *classifier_ : draft_classifier_; }

  int dim_ = 0;
  int out_ = 0;  // logits per head: the draft vocabulary's size, or the model's
  WeightType type_ = WeightType::kFloat32;
  std::vector<int32_t> draft_vocab_;
  const DeviceMatrix* classifier_ = nullptr;
  DeviceMatrix draft_classifier_;  // the classifier's draft rows, when heads share it
  std::vector<Head> heads_;
  int reserved_rows_ = 0;  // rows * heads the scratch below holds
  DeviceBuffer hidden_;    // [rows, dim]
  DeviceBuffer x_;         // [rows, heads, dim]: each head's residual stream
  DeviceBuffer y_;         // [rows, dim]: one block's product
  DeviceBuffer x16_;       // [rows * heads, dim] in `type`: tensor-core inputs
  DeviceBuffer logits_;    // [rows, heads, out]
  DeviceBuffer draft_;     // the draft vocabulary, mapping top-k entries to tokens
  DeviceBuffer topk_;      // TopK's arguments (k and output offset per head), then its ids
  std::vector<int32_t> topk_host_;
};

}  // namespace medusa::kernels::cuda
