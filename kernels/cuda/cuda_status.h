#pragma once
// CUDA runtime and cuBLAS errors as absl::Status, naming the call that failed: running out of
// device memory is ResourceExhausted, a missing GPU or driver Unavailable, anything else
// Internal.

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string_view>

#include "absl/status/status.h"

namespace medusa::kernels::cuda {

absl::Status CudaStatus(cudaError_t error, std::string_view call);
absl::Status CublasStatus(cublasStatus_t status, std::string_view call);

}  // namespace medusa::kernels::cuda

// RETURN_IF_ERROR for a CUDA runtime or cuBLAS call, naming it in the error.
#define CUDA_RETURN_IF_ERROR(call) RETURN_IF_ERROR(::medusa::kernels::cuda::CudaStatus((call), #call))
#define CUBLAS_RETURN_IF_ERROR(call) RETURN_IF_ERROR(::medusa::kernels::cuda::CublasStatus((call), #call))
