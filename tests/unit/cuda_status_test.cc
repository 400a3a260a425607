// CUDA runtime and cuBLAS errors as absl::Status (cuda_status.h): the code a caller acts on,
// and a message naming the call. No GPU needed: the CUDA runtime names its errors without
// one, and cuBLAS's names are the backend's own.

#include "kernels/cuda/cuda_status.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/base/status_macros.h"

namespace medusa::kernels::cuda {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(CudaStatusTest, SuccessIsOk) {
  EXPECT_TRUE(CudaStatus(cudaSuccess, "cudaMalloc").ok());
  EXPECT_TRUE(CublasStatus(CUBLAS_STATUS_SUCCESS, "cublasGemmEx").ok());
}

TEST(CudaStatusTest, OutOfMemoryIsResourceExhaustedNamingTheCall) {
  const absl::Status s = CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc(&k_cache, bytes)");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("cudaMalloc(&k_cache, bytes)"), HasSubstr("cudaErrorMemoryAllocation")));
  const absl::Status cublas = CublasStatus(CUBLAS_STATUS_ALLOC_FAILED, "cublasCreate(&handle)");
  EXPECT_EQ(cublas.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(cublas.message(), AllOf(HasSubstr("cublasCreate(&handle)"), HasSubstr("CUBLAS_STATUS_ALLOC_FAILED")));
}

TEST(CudaStatusTest, NoDeviceOrDriverIsUnavailable) {
  for (cudaError_t e : {cudaErrorNoDevice, cudaErrorInsufficientDriver, cudaErrorNoKernelImageForDevice}) {
    const absl::Status s = CudaStatus(e, "cudaGetDeviceCount");
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), HasSubstr(cudaGetErrorName(e)));
  }
  EXPECT_EQ(CublasStatus(CUBLAS_STATUS_NOT_SUPPORTED, "cublasGemmEx").code(), absl::StatusCode::kUnavailable);
}

TEST(CudaStatusTest, OtherErrorsAreInternal) {
  const absl::Status s = CudaStatus(cudaErrorIllegalAddress, "cudaStreamSynchronize(stream)");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("cudaStreamSynchronize(stream)"), HasSubstr("illegal memory access")));
  EXPECT_EQ(CublasStatus(CUBLAS_STATUS_EXECUTION_FAILED, "cublasGemmEx").code(), absl::StatusCode::kInternal);
  EXPECT_EQ(CublasStatus(CUBLAS_STATUS_INVALID_VALUE, "cublasGemmEx").code(), absl::StatusCode::kInvalidArgument);
}

absl::Status FailingCall() {
  CUDA_RETURN_IF_ERROR(cudaErrorLaunchFailure);
  return absl::OkStatus();
}

TEST(CudaStatusTest, TheMacroReturnsTheErrorWithTheCallsText) {
  const absl::Status s = FailingCall();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("cudaErrorLaunchFailure"));
}

}  // namespace
}  // namespace medusa::kernels::cuda
