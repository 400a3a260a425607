#include "kernels/cpu/medusa_heads.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "kernels/cpu/quantized_matmul.h"
#include "kernels/model/weights.h"

namespace medusa::kernels::cpu {
namespace {

math::AlignedFloats Copy(const std::vector<float>& v) {
  math::AlignedFloats out(v.size());
  std::copy(v.begin(), v.end(), out.begin());
  return out;
}

PackedMatrix PackAs(WeightType type, const std::vector<float>& w, int out, int in) {
  if (type == WeightType::kF32) return PackedMatrix(w.data(), out, in);
  WeightMatrix m(w);
  m.ConvertTo(type, out, in);
  return PackedMatrix(type, m.bytes.data(), out, in);
}

}  // namespace

WeightType MedusaHeadsCpu::BlockTypeFor(WeightType classifier, int dim) {
  switch (classifier) {
    case WeightType::kQ8_0:
    case WeightType::kQ4_0:
    case WeightType::kQ4_1:
      return dim % kQuantBlock == 0 ? WeightType::kQ8_0 : WeightType::kF32;
    case WeightType::kBF16:
    case WeightType::kF16:
      return classifier;
    case WeightType::kF32:
      break;
  }
  return WeightType::kF32;
}

absl::Status MedusaHeadsCpu::Load(const MedusaHeadsWeights& weights, int dim, int vocab, const PackedMatrix* classifier,
                                  WeightType block_type, const PackedMatrix* embedding) {
  RETURN_IF_ERROR(weights.ValidateFor(dim, vocab));
  if (weights.kind == HeadKind::kHydra && (embedding == nullptr || embedding->empty())) {
    return absl::FailedPreconditionError("Hydra heads need the model's token embeddings");
  }
  if (!weights.has_projection() && (classifier == nullptr || classifier->empty())) {
    return absl::FailedPreconditionError("Medusa heads without a projection need the model's classifier");
  }
  std::vector<Head> heads;
  for (size_t h = 0; h < weights.heads.size(); ++h) {
    const MedusaHead& in = weights.heads[h];
    Head head;
    for (size_t l = 0; l < in.blocks.size(); ++l) {
      const MedusaResBlock& block = in.blocks[l];
      head.blocks.push_back({PackAs(block_type, block.weight, dim, weights.BlockInputs(h, l)), Copy(block.bias)});
    }
    if (!in.projection.empty()) {
      head.projection = PackedMatrix(in.projection.data(), vocab, dim);
      if (!weights.draft_vocab.empty()) head.projection = head.projection.SelectRows(weights.draft_vocab);
    }
    heads.push_back(std::move(head));
  }
  draft_classifier_ = PackedMatrix();
  shared_projection_ = classifier;
  if (!heads.empty() && heads[0].projection.empty() && !weights.draft_vocab.empty()) {
    draft_classifier_ = classifier->SelectRows(weights.draft_vocab);
    shared_projection_ = &draft_classifier_;
  }
  heads_ = std::move(heads);
  kind_ = weights.kind;
  embedding_ = embedding;
  draft_vocab_ = weights.draft_vocab;
  dim_ = dim;
  vocab_ = vocab;
  out_ = draft_vocab_.empty() ? vocab : static_cast<int>(draft_vocab_.size());
  return absl::OkStatus();
}

void MedusaHeadsCpu::AddSiluResidual(float* x, int rows, int ldx, const float* y,
                                     const math::AlignedFloats& bias) const {
  for (int r = 0; r < rows; ++r) {
    float* xr = x + static_cast<size_t>(r) * ldx;
    const float* yr = y + static_cast<size_t>(r) * dim_;
    for (int i = 0; i < dim_; ++i) {
      const float z = yr[i] + bias[i];
      xr[i] += z / (1.0f + std::exp(-z));  // SiLU
    }
  }
}

void MedusaHeadsCpu::Project(const float* x, int rows, int ldx, int head, float* logits, int ldy,
                             math::ThreadPool* pool) const {
  const PackedMatrix& projection = heads_[head].projection.empty() ? *shared_projection_ : heads_[head].projection;
  Linear(x, rows, ldx, projection, logits, ldy, /*accumulate=*/false, pool);
}

absl::Status MedusaHeadsCpu::Compute(absl::Span<const float> hidden, int rows, int num_heads, math::ThreadPool* pool,
                                     std::vector<float>* head_logits) {
  if (kind_ == HeadKind::kHydra && num_heads > 0) {
    return absl::FailedPreconditionError("Hydra heads propose per tree path (HydraHeadLogits), not per hidden state");
  }
  if (num_heads < 0 || num_heads > this->num_heads()) {
    return absl::InvalidArgumentError(
        absl::StrCat("asked for ", num_heads, " Medusa heads; ", this->num_heads(), " are loaded"));
  }
  if (rows < 0 || hidden.size() < static_cast<size_t>(rows) * dim_) {
    return absl::InvalidArgumentError(absl::StrCat("Medusa heads need ", rows, " hidden rows of ", dim_));
  }
  const size_t d = dim_, k_count = num_heads;
  head_logits->resize(static_cast<size_t>(rows) * k_count * out_);
  if (rows == 0 || num_heads == 0) return absl::OkStatus();
  if (x_.size() < rows * k_count * d) x_.resize(rows * k_count * d);
  if (y_.size() < rows * d) y_.resize(rows * d);

  // x[r, k] starts as hidden[r] for every head; rows of one head are k_count * dim apart.
  for (int r = 0; r < rows; ++r) {
    for (size_t k = 0; k < k_count; ++k) std::copy_n(hidden.data() + r * d, d, x_.data() + (r * k_count + k) * d);
  }
  const int ld = static_cast<int>(k_count * d);
  for (size_t k = 0; k < k_count; ++k) {
    float* x = x_.data() + k * d;
    for (const Block& block : heads_[k].blocks) {
      Linear(x, rows, ld, block.weight, y_.data(), dim_, /*accumulate=*/false, pool);
      AddSiluResidual(x, rows, ld, y_.data(), block.bias);
    }
  }
  // Vocabulary projections (over the draft vocabulary's rows when there is one): one
  // product over all (row, head) pairs when the classifier is shared; otherwise one per
  // head, into its columns of the output.
  const int ldy = static_cast<int>(k_count) * out_;
  if (heads_[0].projection.empty()) {
    Project(x_.data(), rows * static_cast<int>(k_count), dim_, 0, head_logits->data(), out_, pool);
  } else {
    for (size_t k = 0; k < k_count; ++k) {
      Project(x_.data() + k * d, rows, ld, static_cast<int>(k), head_logits->data() + k * out_, ldy, pool);
    }
  }
  return absl::OkStatus();
}

absl::Status MedusaHeadsCpu::ComputeHydra(absl::Span<const float> hidden, absl::Span<const int32_t> path_tokens,
                                          int rows, int head, math::ThreadPool* pool, std::vector<float>* head_logits) {
  if (kind_ != HeadKind::kHydra) {
    return absl::FailedPreconditionError("the loaded heads are Medusa heads, which do not read a path");
  }
  if (head < 0 || head >= num_heads()) {
    return absl::InvalidArgumentError(absl::StrCat("asked for Hydra head ", head, "; ", num_heads(), " are loaded"));
  }
  const size_t d = dim_, width = head + 2;
  if (rows < 0 || hidden.size() < rows * d || path_tokens.size() < rows * (width - 1)) {
    return absl::InvalidArgumentError(absl::StrCat("Hydra head ", head, " needs ", rows, " hidden rows of ", dim_,
                                                   " and ", rows, " paths of ", width - 1, " tokens"));
  }
  for (size_t i = 0; i < rows * (width - 1); ++i) {
    if (path_tokens[i] < 0 || path_tokens[i] >= vocab_) {
      return absl::InvalidArgumentError(
          absl::StrCat("Hydra path token ", path_tokens[i], " is outside the vocabulary"));
    }
  }
  head_logits->resize(static_cast<size_t>(rows) * out_);
  if (rows == 0) return absl::OkStatus();
  if (u_.size() < rows * width * d) u_.resize(rows * width * d);
  if (x_.size() < rows * d) x_.resize(rows * d);
  if (y_.size() < rows * d) y_.resize(rows * d);
  // u[r] = [h; e(path[0]); ...; e(path[head])]; the residual stream starts at h.
  for (int r = 0; r < rows; ++r) {
    float* u = u_.data() + r * width * d;
    std::copy_n(hidden.data() + r * d, d, u);
    std::copy_n(hidden.data() + r * d, d, x_.data() + r * d);
    for (size_t j = 0; j + 1 < width; ++j) embedding_->CopyRow(path_tokens[r * (width - 1) + j], u + (j + 1) * d);
  }
  const std::vector<Block>& blocks = heads_[head].blocks;
  Linear(u_.data(), rows, static_cast<int>(width * d), blocks[0].weight, y_.data(), dim_, false, pool);
  AddSiluResidual(x_.data(), rows, dim_, y_.data(), blocks[0].bias);
  for (size_t l = 1; l < blocks.size(); ++l) {
    Linear(x_.data(), rows, dim_, blocks[l].weight, y_.data(), dim_, false, pool);
    AddSiluResidual(x_.data(), rows, dim_, y_.data(), blocks[l].bias);
  }
  Project(x_.data(), rows, dim_, head, head_logits->data(), out_, pool);
  return absl::OkStatus();
}

}  // namespace medusa::kernels::cpu
