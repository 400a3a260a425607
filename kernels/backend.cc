#include "kernels/backend.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace medusa::kernels {

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options) {
  if (options.device == "cpu") return CreateCpuBackend(options.threads);
  if (options.device == "cuda") {
    // The CUDA backend slots in here (kernels/cuda/) when the build has one.
    return absl::UnavailableError("this build has no CUDA backend");
  }
  return absl::NotFoundError(absl::StrCat("unknown compute device \"", options.device, "\" (expected cpu or cuda)"));
}

}  // namespace medusa::kernels
