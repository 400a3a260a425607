#pragma once
// Floats that start as zeros and take memory only where written: an anonymous private
// mapping, whose untouched pages are the kernel's shared zero page. The KV pool is sized for
// many long sequences; a server answering a few short ones should not be resident for all of it.

#include <cstddef>

namespace medusa::math {

class ZeroedFloats {
 public:
  ZeroedFloats() = default;
  ~ZeroedFloats();
  ZeroedFloats(ZeroedFloats&& other) noexcept;
  ZeroedFloats& operator=(ZeroedFloats&& other) noexcept;
  ZeroedFloats(const ZeroedFloats&) = delete;
  ZeroedFloats& operator=(const ZeroedFloats&) = delete;

  // `count` zeros; false (and empty) when the address space cannot be had.
  bool Allocate(size_t count);
  void Release();

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace medusa::math
