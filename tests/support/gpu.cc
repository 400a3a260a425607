#include "tests/support/gpu.h"

#include "kernels/backend.h"

namespace medusa::testing {

std::optional<std::string> NoGpuReason() {
  static const std::optional<std::string> reason = []() -> std::optional<std::string> {
    if (kernels::CudaDeviceVisible()) return std::nullopt;
    kernels::BackendOptions options;
    options.device = "cuda";
    const auto backend = kernels::CreateBackend(options);
    if (backend.ok()) return std::nullopt;
    return std::string(backend.status().message());
  }();
  return reason;
}

}  // namespace medusa::testing
