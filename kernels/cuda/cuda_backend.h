#pragma once
// The CUDA compute backend: weights and the paged KV cache on one NVIDIA GPU (compute
// capability 8.0 or newer), fp16 / bf16 weights with fp32 accumulation, or fp32 throughout
// (equality tests against the CPU backend). cuda_backend.cc tells how a step runs.

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace medusa::kernels::cuda {

// GPUs visible to this process; 0 when the driver reports none or fails (no GPU, no driver).
int VisibleDevices();

// Unavailable, with the driver's message, where no GPU is usable; InvalidArgument for options
// the backend cannot take (BackendOptions::weights, gpu_memory_fraction).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options);

}  // namespace medusa::kernels::cuda
