// Finding and loading libmedusa_cuda.so (kernels/cuda_plugin.h).

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_plugin.h"

namespace medusa::kernels {
namespace {

std::string PluginPath() {
  if (const char* path = std::getenv("MEDUSA_CUDA_PLUGIN"); path != nullptr && *path != '\0') return path;
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return kCudaPluginFile;  // the loader's own search path
  return (exe.parent_path().parent_path() / "lib" / kCudaPluginFile).string();
}

absl::StatusOr<const CudaPluginApi*> Load() {
#ifndef MEDUSA_HAVE_CUDA
  return absl::UnavailableError("this build has no CUDA backend (no CUDA toolkit was found when it was configured)");
#else
  const std::string path = PluginPath();
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot load the CUDA backend (", path, "): ", dlerror()));
  }
  using Entry = const CudaPluginApi* (*)();
  auto entry = reinterpret_cast<Entry>(dlsym(handle, kCudaPluginSymbol));
  const CudaPluginApi* api = entry != nullptr ? entry() : nullptr;
  if (api == nullptr || api->abi != kCudaPluginAbi || api->backend_options_size != sizeof(BackendOptions) ||
      api->forward_batch_size != sizeof(ForwardBatch)) {
    return absl::UnavailableError(absl::StrCat(path, " is not a CUDA backend built with this program"));
  }
  return api;  // never unloaded: backends it made may live until the process ends
#endif
}

}  // namespace

absl::StatusOr<const CudaPluginApi*> LoadCudaPlugin() {
  static const absl::StatusOr<const CudaPluginApi*>* plugin = new absl::StatusOr<const CudaPluginApi*>(Load());
  return *plugin;
}

}  // namespace medusa::kernels
