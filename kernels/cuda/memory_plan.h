#pragma once
// How the GPU's memory is shared out: the weights first, then scratch for the largest batch,
// then a pool of KV blocks from what `--gpu-memory-fraction` of the device leaves, no more
// than the engine asked for.

#include <cstdint>

#include "absl/status/statusor.h"

namespace medusa::kernels::cuda {

struct MemoryPlanInput {
  int64_t total_bytes = 0;         // the device's memory
  int64_t free_bytes = 0;          // free now, with the weights and scratch already allocated
  double fraction = 0.9;           // of total_bytes in use once the pool is allocated, in (0, 1]
  int64_t requested_kv_bytes = 0;  // the engine's KV budget; the pool never exceeds it
  int64_t kv_bytes_per_block = 0;
};

// The KV blocks to allocate. ResourceExhausted, saying what is missing, when not one block
// fits; InvalidArgument for a fraction outside (0, 1] or non-positive sizes.
absl::StatusOr<int> PlanKvBlocks(const MemoryPlanInput& input);

}  // namespace medusa::kernels::cuda
