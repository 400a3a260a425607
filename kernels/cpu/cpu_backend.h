#pragma once
// The CPU compute backend: float32 weights, OpenBLAS / AVX-512 products, its own thread pool.

#include <memory>

#include "kernels/backend.h"

namespace medusa::kernels {

// `threads` <= 0 means every core the process may run on. OpenBLAS is set to one thread
// (process-wide): this backend splits the products across its own pool (thread_pool.h).
std::unique_ptr<Backend> CreateCpuBackend(int threads);

}  // namespace medusa::kernels
