#include "kernels/cuda/device_buffer.h"

#include <cuda_runtime_api.h>

#include "kernels/base/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace medusa::kernels::cuda {

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::Status DeviceBuffer::Allocate(size_t bytes) {
  Release();
  if (bytes == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMalloc(&data_, bytes));
  bytes_ = bytes;
  return absl::OkStatus();
}

absl::StatusOr<bool> DeviceBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return false;
  RETURN_IF_ERROR(Allocate(bytes));
  return true;
}

void DeviceBuffer::Release() {
  if (data_ != nullptr) cudaFree(data_);  // an error here has nowhere to go; the context is going anyway
  data_ = nullptr;
  bytes_ = 0;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

absl::Status PinnedBuffer::Reserve(size_t bytes) {
  if (bytes <= bytes_) return absl::OkStatus();
  Release();
  // Headroom, so a slowly growing step does not reallocate every time.
  const size_t size = bytes + bytes / 2;
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&data_, size));
  bytes_ = size;
  return absl::OkStatus();
}

void PinnedBuffer::Release() {
  if (data_ != nullptr) cudaFreeHost(data_);
  data_ = nullptr;
  bytes_ = 0;
}

}  // namespace medusa::kernels::cuda
