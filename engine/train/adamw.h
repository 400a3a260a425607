#pragma once
// AdamW (PyTorch's formulation) with global-norm gradient clipping, over a table of
// parameter tensors whose memory belongs to the caller. Work is split across the pool in
// fixed chunks of values, so the chunking, not the thread count, fixes the order of the
// norm's sum. Internal to engine/train.

#include <cstdint>
#include <string>
#include <vector>

#include "engine/train/trainer_options.h"
#include "kernels/math/thread_pool.h"

namespace medusa::train_internal {

// One trained tensor with its gradient and AdamW moments.
struct ParamTensor {
  std::string name;  // in the heads layout ("{head}.{layer}.linear.weight", ...)
  std::vector<int64_t> shape;
  float* value;
  float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  size_t size;
  bool decay;  // weight decay applies (weights and projections, not biases)
};

class AdamW {
 public:
  void SetParams(std::vector<ParamTensor> params);
  const std::vector<ParamTensor>& params() const { return params_; }

  // Clips the gradients by global norm (options.grad_clip > 0) and updates every parameter
  // with learning rate `lr`; `step` (0-based) sets the moments' bias correction.
  void Update(const TrainerOptions& options, double lr, int64_t step, math::ThreadPool& pool);

 private:
  struct Chunk {
    int param;
    size_t begin, end;
  };
  double GradientNorm(math::ThreadPool& pool);

  std::vector<ParamTensor> params_;
  std::vector<Chunk> chunks_;
  std::vector<double> chunk_sums_;
};

}  // namespace medusa::train_internal
