#pragma once
// One model configuration, independent of the file format it was read from: what a
// backend is told of the model besides its weights.

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace medusa {

struct ModelConfig {
  std::string name;          // human-readable (file name or general.name)
  std::string architecture = "llama";
  int dim = 0;               // embedding length
  int hidden_dim = 0;        // feed-forward length
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;        // grouped-query attention: n_heads % n_kv_heads == 0
  int head_dim = 0;          // dim / n_heads unless the file says otherwise
  int vocab_size = 0;
  int max_seq_len = 0;       // context length
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  // Llama 3's RoPE scaling (Hugging Face rope_scaling, rope_type "llama3"): frequencies whose
  // wavelength exceeds original_context / low_freq_factor are divided by `factor`, those
  // shorter than original_context / high_freq_factor kept, those between interpolated.
  struct RopeScaling {
    float factor = 0.0f;  // 0: no scaling
    float low_freq_factor = 1.0f;
    float high_freq_factor = 4.0f;
    int original_context = 8192;
  };
  RopeScaling rope_scaling;
  bool tied_classifier = true;  // classifier shares the token embedding

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }

  // Checks internal consistency (positive sizes, divisibility). Names the offending field.
  absl::Status Validate() const;
};

}  // namespace medusa
