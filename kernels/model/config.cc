#include "kernels/model/config.h"

#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

// Upper bounds far above any Llama-family model; they keep products such as
// vocab_size * dim or n_layers * dim * dim well inside int64 and catch corrupt headers
// before any allocation is sized from them.
constexpr int kMaxWidth = 1 << 20;  // dim, hidden_dim, q_dim, kv_dim
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1 << 14;
constexpr int kMaxVocab = 1 << 24;
constexpr int kMaxSeqLen = 1 << 24;

absl::Status CheckRange(const char* field, int64_t value, int64_t max) {
  if (value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: ", field, " must be positive (got ", value, ")"));
  }
  if (value > max) {
    return absl::InvalidArgumentError(absl::StrCat("model config: ", field, " = ", value,
                                                   " exceeds the supported maximum ", max));
  }
  return absl::OkStatus();
}

absl::Status CheckPositiveFinite(const char* field, float value) {
  if (!std::isfinite(value) || value <= 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config: ", field, " must be a positive finite number (got ", value, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelConfig::Validate() const {
  const struct {
    const char* field;
    int64_t value;
    int64_t max;
  } sizes[] = {
      {"dim", dim, kMaxWidth},
      {"hidden_dim", hidden_dim, kMaxWidth},
      {"n_layers", n_layers, kMaxLayers},
      {"n_heads", n_heads, kMaxHeads},
      {"n_kv_heads", n_kv_heads, kMaxHeads},
      {"head_dim", head_dim, kMaxWidth},
      {"vocab_size", vocab_size, kMaxVocab},
      {"max_seq_len", max_seq_len, kMaxSeqLen},
  };
  for (const auto& s : sizes) {
    RETURN_IF_ERROR(CheckRange(s.field, s.value, s.max));
  }
  // Products in int64 so that a corrupt header cannot overflow the check itself.
  if (absl::Status s =
          CheckRange("n_heads * head_dim (q_dim)", int64_t{n_heads} * head_dim, kMaxWidth);
      !s.ok()) {
    return s;
  }
  if (n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("model config: n_heads (", n_heads,
                                                   ") must be a multiple of n_kv_heads (",
                                                   n_kv_heads, ") for grouped-query attention"));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config: head_dim (", head_dim, ") must be even (RoPE rotates pairs)"));
  }
  RETURN_IF_ERROR(CheckPositiveFinite("rms_eps", rms_eps));
  RETURN_IF_ERROR(CheckPositiveFinite("rope_theta", rope_theta));
  if (rope_scaling.factor != 0.0f) {
    RETURN_IF_ERROR(CheckPositiveFinite("rope_scaling.factor", rope_scaling.factor));
    RETURN_IF_ERROR(CheckPositiveFinite("rope_scaling.low_freq_factor", rope_scaling.low_freq_factor));
    RETURN_IF_ERROR(CheckPositiveFinite("rope_scaling.high_freq_factor", rope_scaling.high_freq_factor));
    if (!(rope_scaling.high_freq_factor > rope_scaling.low_freq_factor) || rope_scaling.original_context <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model config: rope_scaling needs high_freq_factor (", rope_scaling.high_freq_factor,
          ") > low_freq_factor (", rope_scaling.low_freq_factor, ") and original_max_position_embeddings (",
          rope_scaling.original_context, ") > 0"));
    }
  }
  if (architecture.empty()) {
    return absl::InvalidArgumentError("model config: architecture must not be empty");
  }
  return absl::OkStatus();
}

}  // namespace medusa
