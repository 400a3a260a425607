#include "kernels/math/blas.h"

#include <dlfcn.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace medusa::math {
namespace {

// The CBLAS C interface's enum values (cblas.h), passed as ints.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
using SetThreadsFn = void (*)(int);
using CoreNameFn = char* (*)();

struct Blas {
  absl::Status status;
  SgemmFn sgemm = nullptr;
  CoreNameFn corename = nullptr;
};

// The kernels this processor's features allow; null where OpenBLAS's own choice should stand.
const char* CoreTypeForThisProcessor() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

Blas Load() {
  Blas blas;
  // Set before the library reads them, once, at load; not over what the user set.
  if (const char* core = CoreTypeForThisProcessor(); core != nullptr) setenv("OPENBLAS_CORETYPE", core, 0);
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  void* handle = nullptr;
  for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
    if ((handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
  }
  if (handle == nullptr) {
    blas.status =
        absl::FailedPreconditionError(absl::StrCat("OpenBLAS (libopenblas.so.0) could not be loaded: ", dlerror(),
                                                   "; install it (Debian: apt-get install libopenblas0)"));
    return blas;
  }
  blas.sgemm = reinterpret_cast<SgemmFn>(dlsym(handle, "cblas_sgemm"));
  auto set_threads = reinterpret_cast<SetThreadsFn>(dlsym(handle, "openblas_set_num_threads"));
  blas.corename = reinterpret_cast<CoreNameFn>(dlsym(handle, "openblas_get_corename"));
  if (blas.sgemm == nullptr || set_threads == nullptr || blas.corename == nullptr) {
    blas.status = absl::FailedPreconditionError(
        "the loaded libopenblas.so.0 lacks cblas_sgemm, openblas_set_num_threads or openblas_get_corename");
    return blas;
  }
  set_threads(1);
  return blas;
}

const Blas& Library() {
  static const Blas* blas = new Blas(Load());  // never unloaded: its threads live to the end
  return *blas;
}

}  // namespace

absl::Status LoadBlas() { return Library().status; }

std::string BlasCoreName() {
  const Blas& blas = Library();
  return blas.status.ok() ? std::string(blas.corename()) : "not loaded";
}

void Sgemm(bool transpose_a, bool transpose_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc) {
  Library().sgemm(kRowMajor, transpose_a ? kTrans : kNoTrans, transpose_b ? kTrans : kNoTrans, m, n, k, alpha, a, lda,
                  b, ldb, beta, c, ldc);
}

}  // namespace medusa::math
