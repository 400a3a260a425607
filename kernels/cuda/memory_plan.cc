#include "kernels/cuda/memory_plan.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_format.h"

namespace medusa::kernels::cuda {

absl::StatusOr<int> PlanKvBlocks(const MemoryPlanInput& in) {
  if (!(in.fraction > 0.0 && in.fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("--gpu-memory-fraction must be in (0, 1], got %g", in.fraction));
  }
  if (in.total_bytes <= 0 || in.kv_bytes_per_block <= 0 || in.requested_kv_bytes <= 0) {
    return absl::InvalidArgumentError("memory plan: total, requested and per-block sizes must be positive");
  }
  // Memory in use (this process's weights and scratch, and whatever else the device runs)
  // counts against the share; the rest of the share, as far as it is free, holds KV blocks.
  const int64_t share = static_cast<int64_t>(in.fraction * static_cast<double>(in.total_bytes));
  const int64_t held = in.total_bytes - in.free_bytes;
  const int64_t available = std::min(share - held, in.free_bytes);
  const int64_t budget = std::min(available, in.requested_kv_bytes);
  const int64_t blocks = budget / in.kv_bytes_per_block;
  if (blocks < 1) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "no GPU memory for the KV cache: one block takes %d bytes, %d are free and %.0f%% of the device's %d allow "
        "%d more (raise --gpu-memory-fraction or --kv-cache-mb, or use a smaller model)",
        in.kv_bytes_per_block, in.free_bytes, 100 * in.fraction, in.total_bytes, std::max<int64_t>(share - held, 0)));
  }
  return static_cast<int>(std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max()));
}

}  // namespace medusa::kernels::cuda
