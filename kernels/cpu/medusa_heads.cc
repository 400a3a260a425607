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
                                  WeightType block_type) {
  RETURN_IF_ERROR(weights.ValidateFor(dim, vocab));
  if (!weights.has_projection() && (classifier == nullptr || classifier->empty())) {
    return absl::FailedPreconditionError("Medusa heads without a projection need the model's classifier");
  }
  std::vector<Head> heads;
  for (const MedusaHead& in : weights.heads) {
    Head head;
    for (const MedusaResBlock& block : in.blocks) {
      head.blocks.push_back({PackAs(block_type, block.weight, dim, dim), Copy(block.bias)});
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
  draft_vocab_ = weights.draft_vocab;
  dim_ = dim;
  vocab_ = vocab;
  out_ = draft_vocab_.empty() ? vocab : static_cast<int>(draft_vocab_.size());
  return absl::OkStatus();
}

absl::Status MedusaHeadsCpu::Compute(absl::Span<const float> hidden, int rows, int num_heads, math::ThreadPool* pool,
                                     std::vector<float>* head_logits) {
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
      for (int r = 0; r < rows; ++r) {
        float* xr = x + r * ld;
        const float* yr = y_.data() + r * d;
        for (size_t i = 0; i < d; ++i) {
          const float z = yr[i] + block.bias[i];
          xr[i] += z / (1.0f + std::exp(-z));  // SiLU
        }
      }
    }
  }
  // Vocabulary projections (over the draft vocabulary's rows when there is one): one
  // product over all (row, head) pairs when the classifier is shared; otherwise one per
  // head, into its columns of the output.
  const int ldy = static_cast<int>(k_count) * out_;
  if (heads_[0].projection.empty()) {
    Linear(x_.data(), rows * static_cast<int>(k_count), dim_, *shared_projection_, head_logits->data(), out_, false,
           pool);
  } else {
    for (size_t k = 0; k < k_count; ++k) {
      Linear(x_.data() + k * d, rows, ld, heads_[k].projection, head_logits->data() + k * out_, ldy, false, pool);
    }
  }
  return absl::OkStatus();
}

}  // namespace medusa::kernels::cpu
