#include "kernels/backend.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda_plugin.h"

namespace medusa::kernels {

bool CudaDeviceVisible() {
  const absl::StatusOr<const CudaPluginApi*> plugin = LoadCudaPlugin();
  return plugin.ok() && (*plugin)->visible_devices() > 0;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options) {
  if (options.device == "auto") {
    BackendOptions chosen = options;
    chosen.device = CudaDeviceVisible() ? "cuda" : "cpu";
    return CreateBackend(chosen);
  }
  if (options.device == "cpu") {
    if (absl::StatusOr<WeightMode> mode = ParseWeightMode(options.weights); !mode.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--weights: ", mode.status().message()));
    }
    return CreateCpuBackend(options.threads);
  }
  if (options.device == "cuda") {
    const absl::StatusOr<const CudaPluginApi*> plugin = LoadCudaPlugin();
    if (!plugin.ok()) return absl::UnavailableError(absl::StrCat("--device cuda: ", plugin.status().message()));
    return (*plugin)->create(options);
  }
  return absl::NotFoundError(
      absl::StrCat("unknown compute device \"", options.device, "\" (expected cpu, cuda or auto)"));
}

}  // namespace medusa::kernels
