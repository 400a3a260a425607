#pragma once
// Single-precision matrix products (the heads trainer's) through OpenBLAS, loaded at first use.
//
// OpenBLAS picks its kernels once, when it is loaded, from the processor's model number, and
// Debian 12's build (0.3.21) does not know processors newer than it (Sapphire and Emerald Rapids,
// as on our Intel development machines): there it falls back to its SSE3 ("Prescott") kernels,
// about 4x slower than its AVX-512 ones. It reads OPENBLAS_CORETYPE when it loads, so it is not
// linked: LoadBlas() names, unless the environment already does, the kernels this processor's
// features allow (AVX-512: SkylakeX; AVX2 with FMA: Haswell), then loads it. Its own threads are
// off (OPENBLAS_NUM_THREADS=1 unless set, and one thread afterwards): the callers split products
// over their own pools (thread_pool.h), and threads beside those would compete for the cores.

#include <string>

#include "absl/status/status.h"

namespace medusa::math {

// Loads OpenBLAS once per process; later calls return the first call's outcome. An error names
// the library that could not be loaded.
absl::Status LoadBlas();

// The kernels OpenBLAS runs ("SkylakeX", "Haswell", ...), or "not loaded".
std::string BlasCoreName();

// C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, all row-major; op transposes where asked.
// LoadBlas() must have succeeded.
void Sgemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc);

}  // namespace medusa::math
