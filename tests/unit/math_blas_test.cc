// OpenBLAS as the heads trainer uses it (kernels/math/blas.h): products against float64 code,
// and the kernels it runs are the processor's, not the SSE3 fallback that Debian 12's build picks
// on processors newer than it.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "kernels/math/blas.h"
#include "tests/support/gradient_check.h"

namespace medusa::math {
namespace {

using ::medusa::testing::RandomVector;

// Whatever the user's environment named before the library loaded (read before any test loads it).
const char* const kUserCoreType = std::getenv("OPENBLAS_CORETYPE");

TEST(BlasTest, LoadsAndMultipliesLikeFloat64InEveryTransposition) {
  ASSERT_TRUE(LoadBlas().ok()) << LoadBlas();
  const int m = 37, n = 53, k = 29, pad = 3;  // odd sizes and leading dimensions past the rows
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      const std::vector<float> a = RandomVector(static_cast<size_t>(ta ? k : m) * lda, 1, 1.0f);
      const std::vector<float> b = RandomVector(static_cast<size_t>(tb ? n : k) * ldb, 2, 1.0f);
      std::vector<float> c = RandomVector(static_cast<size_t>(m) * ldc, 3, 1.0f);
      const std::vector<float> c0 = c;
      const float alpha = 0.75f, beta = -0.5f;
      Sgemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < n; ++j) {
          double sum = 0;
          for (int p = 0; p < k; ++p) {
            const double x = ta ? a[static_cast<size_t>(p) * lda + i] : a[static_cast<size_t>(i) * lda + p];
            const double y = tb ? b[static_cast<size_t>(j) * ldb + p] : b[static_cast<size_t>(p) * ldb + j];
            sum += x * y;
          }
          const double want = alpha * sum + beta * static_cast<double>(c0[static_cast<size_t>(i) * ldc + j]);
          ASSERT_NEAR(c[static_cast<size_t>(i) * ldc + j], want, 1e-5 * k)
              << "transpose a " << ta << ", b " << tb << " at " << i << "," << j;
        }
        for (int j = n; j < ldc; ++j) {  // past the columns: untouched
          ASSERT_EQ(c[static_cast<size_t>(i) * ldc + j], c0[static_cast<size_t>(i) * ldc + j]);
        }
      }
    }
  }
}

TEST(BlasTest, RunsTheKernelsThisProcessorAllows) {
  ASSERT_TRUE(LoadBlas().ok()) << LoadBlas();
  if (kUserCoreType != nullptr) GTEST_SKIP() << "OPENBLAS_CORETYPE is set (" << kUserCoreType << "): the user's choice";
  const std::string core = absl::AsciiStrToLower(BlasCoreName());
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    EXPECT_EQ(core, "skylakex");
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_EQ(core, "haswell");
  } else {
    GTEST_SKIP() << "no AVX2: OpenBLAS's own choice (" << core << ") stands";
  }
}

}  // namespace
}  // namespace medusa::math
