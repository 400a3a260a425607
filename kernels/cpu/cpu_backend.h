#pragma once
// The CPU compute backend: float32 weights, SIMD kernels (AVX-512, AVX2 or portable: simd.h), its own thread pool.

#include <memory>

#include "kernels/backend.h"

namespace medusa::kernels {

// `threads` <= 0 means every core the process may run on. OpenBLAS is set to one thread
// (process-wide): this backend splits the products across its own pool (thread_pool.h).
std::unique_ptr<Backend> CreateCpuBackend(int threads);

}  // namespace medusa::kernels
