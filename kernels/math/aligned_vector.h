#pragma once
// std::vector whose storage starts on a 64-byte (cache line, AVX-512 register) boundary,
// so rows of weights whose length is a multiple of 16 floats never straddle cache lines.

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace medusa::math {

template <typename T>
struct CacheAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};

  CacheAlignedAllocator() = default;
  template <typename U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) {}

  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlignment); }

  template <typename U>
  bool operator==(const CacheAlignedAllocator<U>&) const { return true; }
};

using AlignedFloats = std::vector<float, CacheAlignedAllocator<float>>;
using AlignedBytes = std::vector<uint8_t, CacheAlignedAllocator<uint8_t>>;

}  // namespace medusa::math
