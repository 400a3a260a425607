#include "kernels/math/zeroed_buffer.h"

#include <sys/mman.h>

#include <utility>

namespace medusa::math {

ZeroedFloats::~ZeroedFloats() { Release(); }

ZeroedFloats::ZeroedFloats(ZeroedFloats&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

ZeroedFloats& ZeroedFloats::operator=(ZeroedFloats&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

bool ZeroedFloats::Allocate(size_t count) {
  Release();
  if (count == 0) return true;
  if (count > static_cast<size_t>(-1) / sizeof(float)) return false;
  // Not MAP_NORESERVE: the kernel's overcommit rules still refuse a pool that could never fit.
  void* p = mmap(nullptr, count * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<float*>(p);
  size_ = count;
  return true;
}

void ZeroedFloats::Release() {
  if (data_ != nullptr) munmap(data_, size_ * sizeof(float));
  data_ = nullptr;
  size_ = 0;
}

}  // namespace medusa::math
