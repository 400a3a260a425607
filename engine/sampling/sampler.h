#pragma once
// Token sampling from logits: greedy, temperature, top-k, top-p, seeded.

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace medusa {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: no limit
  float top_p = 1.0f;        // nucleus mass, (0, 1]
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0f; }
  // InvalidArgument naming the field for out-of-range values (NaN included).
  absl::Status Validate() const;
};

// Index of the largest logit (the first one on ties, as llama2.c and PyTorch do).
int32_t Argmax(absl::Span<const float> logits);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // Picks the next token. Same seed and same logits: same choices.
  int32_t Sample(absl::Span<const float> logits);

  // The probability distribution after temperature, top-k and top-p (zeros
  // outside the kept set), for acceptance rules that need it. Greedy params give
  // a one-hot distribution at the argmax.
  void Distribution(absl::Span<const float> logits, std::vector<float>* probs);

  // A uniform draw in [0, 1) from this sampler's stream.
  float Uniform();

  const SamplingParams& params() const { return params_; }

 private:
  // Fills candidates_ with the kept (id, probability) pairs, probabilities normalized.
  void KeepCandidates(absl::Span<const float> logits);

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // reused: no allocation per token
};

}  // namespace medusa
