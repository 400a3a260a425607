#pragma once
// For tests that need a GPU: why there is none on this machine, to skip with.

#include <optional>
#include <string>

namespace medusa::testing {

// Nothing when the CUDA backend can run here; otherwise the reason it cannot (no CUDA
// toolkit at build time, no driver, no visible GPU), as CreateBackend words it.
std::optional<std::string> NoGpuReason();

}  // namespace medusa::testing

// Skips the current test, with the reason, where no GPU can run it.
#define SKIP_WITHOUT_GPU()                                                            \
  do {                                                                                \
    if (const std::optional<std::string> reason = ::medusa::testing::NoGpuReason()) { \
      GTEST_SKIP() << "needs a GPU: " << *reason;                                     \
    }                                                                                 \
  } while (0)
