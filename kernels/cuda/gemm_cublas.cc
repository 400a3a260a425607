#include "kernels/cuda/gemm_cublas.h"

#include "kernels/base/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/layer_kernels.h"

namespace medusa::kernels::cuda {

absl::Status CublasGemm(cublasHandle_t handle, const float* x, int rows, int ldx, const void* w, WeightType type,
                        int out, int in, float* y, int ldy, bool accumulate, void* x16, cudaStream_t stream) {
  if (rows == 0 || out == 0) return absl::OkStatus();
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T [out, rows] = W [in, out]^T x^T [in, rows].
  if (type == WeightType::kFloat32) {
    CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, CUDA_R_32F, in, x,
                                        CUDA_R_32F, ldx, &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F_PEDANTIC,
                                        CUBLAS_GEMM_DEFAULT));
    return absl::OkStatus();
  }
  const cudaDataType_t data = type == WeightType::kFloat16 ? CUDA_R_16F : CUDA_R_16BF;
  LaunchConvertRows(x, rows, in, ldx, x16, type, stream);
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, data, in, x16, data,
                                      in, &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace medusa::kernels::cuda
