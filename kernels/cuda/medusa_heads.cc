#include "kernels/cuda/medusa_heads.h"

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/base/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/layer_kernels.h"
#include "kernels/cuda/selection_kernels.h"

namespace medusa::kernels::cuda {

absl::Status MedusaHeadsCuda::Load(MedusaHeadsWeights weights, int dim, int vocab, const DeviceMatrix* classifier,
                                   WeightType type) {
  RETURN_IF_ERROR(weights.ValidateFor(dim, vocab));
  if (!weights.has_projection() && (classifier == nullptr || classifier->empty())) {
    return absl::FailedPreconditionError("Medusa heads without a projection need the model's classifier");
  }
  const std::vector<int32_t>& draft = weights.draft_vocab;
  std::vector<Head> heads;
  for (MedusaHead& in : weights.heads) {
    Head head;
    for (MedusaResBlock& block : in.blocks) {
      Block b;
      ASSIGN_OR_RETURN(b.weight, UploadMatrix({&block.weight}, dim, type));
      ASSIGN_OR_RETURN(b.bias, UploadFloats(block.bias));
      head.blocks.push_back(std::move(b));
    }
    if (!in.projection.empty()) {
      if (!draft.empty()) {
        // Only the draft vocabulary's rows, in its order.
        std::vector<float> rows(draft.size() * static_cast<size_t>(dim));
        for (size_t i = 0; i < draft.size(); ++i) {
          std::copy_n(in.projection.begin() + static_cast<size_t>(draft[i]) * dim, dim, rows.begin() + i * dim);
        }
        in.projection.swap(rows);
      }
      ASSIGN_OR_RETURN(head.projection, UploadMatrix({&in.projection}, dim, type));
    }
    heads.push_back(std::move(head));
  }
  draft_classifier_ = DeviceMatrix();
  classifier_ = classifier;
  if (!weights.has_projection() && !draft.empty()) {
    ASSIGN_OR_RETURN(draft_classifier_, GatherMatrixRows(*classifier, draft));
  }
  draft_.Release();
  if (!draft.empty()) {
    RETURN_IF_ERROR(draft_.Allocate(draft.size() * sizeof(int32_t)));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(draft_.get(), draft.data(), draft.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  }
  heads_ = std::move(heads);
  draft_vocab_ = draft;
  dim_ = dim;
  type_ = type;
  out_ = draft_vocab_.empty() ? vocab : static_cast<int>(draft_vocab_.size());
  reserved_rows_ = 0;
  return absl::OkStatus();
}

absl::Status MedusaHeadsCuda::Reserve(int rows, int num_heads) {
  const size_t pairs = static_cast<size_t>(rows) * num_heads;
  if (pairs <= static_cast<size_t>(reserved_rows_)) return absl::OkStatus();
  const size_t d = dim_;
  RETURN_IF_ERROR(hidden_.Reserve(pairs * d * sizeof(float)).status());
  RETURN_IF_ERROR(x_.Reserve(pairs * d * sizeof(float)).status());
  RETURN_IF_ERROR(y_.Reserve(pairs * d * sizeof(float)).status());
  RETURN_IF_ERROR(x16_.Reserve(pairs * d * TypeBytes(type_)).status());
  RETURN_IF_ERROR(logits_.Reserve(pairs * out_ * sizeof(float)).status());
  reserved_rows_ = static_cast<int>(pairs);
  return absl::OkStatus();
}

absl::Status MedusaHeadsCuda::EnqueueLogits(absl::Span<const float> hidden, int rows, int num_heads,
                                            cudaStream_t stream) {
  if (num_heads < 0 || num_heads > this->num_heads()) {
    return absl::InvalidArgumentError(
        absl::StrCat("asked for ", num_heads, " Medusa heads; ", this->num_heads(), " are loaded"));
  }
  if (rows < 0 || hidden.size() < static_cast<size_t>(rows) * dim_) {
    return absl::InvalidArgumentError(absl::StrCat("Medusa heads need ", rows, " hidden rows of ", dim_));
  }
  if (rows == 0 || num_heads == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Reserve(rows, num_heads));
  const size_t d = dim_, k_count = num_heads;
  float* x = x_.get<float>();
  const int ld = static_cast<int>(k_count * d);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(hidden_.get(), hidden.data(), rows * d * sizeof(float), cudaMemcpyHostToDevice, stream));
  for (size_t k = 0; k < k_count; ++k) {
    // Every head starts from the hidden state: x[r, k] = hidden[r].
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(x + k * d, ld * sizeof(float), hidden_.get(), d * sizeof(float),
                                           d * sizeof(float), rows, cudaMemcpyDeviceToDevice, stream));
  }
  const RowCount row_count{nullptr, rows};
  for (size_t k = 0; k < k_count; ++k) {
    for (const Block& block : heads_[k].blocks) {
      LaunchInvariantGemm(x + k * d, row_count, ld, block.weight.get(), type_, dim_, dim_, y_.get<float>(), dim_,
                          /*accumulate=*/false, x16_.get(), stream);
      LaunchBiasSiluResidual(y_.get<float>(), block.bias.get<float>(), rows, dim_, x + k * d, ld, stream);
    }
  }
  // One product over every (row, head) pair when the projection is shared; otherwise one per
  // head, into its columns of the output.
  float* logits = logits_.get<float>();
  if (heads_[0].projection.empty()) {
    const DeviceMatrix& p = shared_projection();
    LaunchInvariantGemm(x, RowCount{nullptr, rows * num_heads}, dim_, p.get(), type_, out_, dim_, logits, out_, false,
                        x16_.get(), stream);
  } else {
    for (size_t k = 0; k < k_count; ++k) {
      LaunchInvariantGemm(x + k * d, row_count, ld, heads_[k].projection.get(), type_, out_, dim_, logits + k * out_,
                          static_cast<int>(k_count) * out_, false, x16_.get(), stream);
    }
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status MedusaHeadsCuda::Compute(absl::Span<const float> hidden, int rows, int num_heads, cudaStream_t stream,
                                      std::vector<float>* head_logits) {
  RETURN_IF_ERROR(EnqueueLogits(hidden, rows, num_heads, stream));
  head_logits->resize(static_cast<size_t>(rows) * num_heads * out_);
  if (head_logits->empty()) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(head_logits->data(), logits_.get(), head_logits->size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status MedusaHeadsCuda::TopK(absl::Span<const float> hidden, int rows, absl::Span<const int> topk,
                                   cudaStream_t stream, std::vector<int32_t>* ids) {
  RETURN_IF_ERROR(CheckHeadTopK(topk, num_heads(), out_));
  const int heads = static_cast<int>(topk.size());
  RETURN_IF_ERROR(EnqueueLogits(hidden, rows, heads, stream));
  // k and output offset per head, then room for the ids.
  topk_host_.assign(2 * heads, 0);
  int total = 0;
  for (int h = 0; h < heads; ++h) {
    topk_host_[h] = topk[h];
    topk_host_[heads + h] = total;
    total += topk[h];
  }
  ids->resize(static_cast<size_t>(rows) * total);
  if (ids->empty()) return absl::OkStatus();
  RETURN_IF_ERROR(topk_.Reserve((topk_host_.size() + ids->size()) * sizeof(int32_t)).status());
  int32_t* args = topk_.get<int32_t>();
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(args, topk_host_.data(), topk_host_.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  int32_t* out = args + topk_host_.size();
  LaunchTopKRows(logits_.get<float>(), rows, heads, out_, args, args + heads, total,
                 draft_vocab_.empty() ? nullptr : draft_.get<int32_t>(), out, stream);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(ids->data(), out, ids->size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace medusa::kernels::cuda
