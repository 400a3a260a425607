#pragma once
// Memory on the GPU (cudaMalloc) and pinned host memory (cudaMallocHost), owned: freed when
// the buffer goes, moved but never copied. Allocation failures are absl::Status
// (ResourceExhausted when the device is out of memory).

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace medusa::kernels::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  ~DeviceBuffer() { Release(); }

  // Replaces the buffer with `bytes` of uninitialized device memory.
  absl::Status Allocate(size_t bytes);
  // Allocate unless the buffer already holds `bytes`; returns whether it was reallocated.
  absl::StatusOr<bool> Reserve(size_t bytes);
  void Release();

  template <typename T = void>
  T* get() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept { *this = std::move(other); }
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  ~PinnedBuffer() { Release(); }

  // Holds at least `bytes` (the contents are kept only when nothing is reallocated).
  absl::Status Reserve(size_t bytes);
  void Release();

  template <typename T = void>
  T* get() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace medusa::kernels::cuda
