#pragma once
// The CUDA backend ships as a plugin, libmedusa_cuda.so, loaded with dlopen only when a GPU is
// asked for or probed (--device cuda or auto). Linked into the binaries, the CUDA libraries'
// thread-local storage (4 KiB for the runtime, 92 KiB for cuBLAS) would be reserved in every
// thread the process makes, and the metrics endpoint's civetweb workers, made with small
// fixed stacks, overflow them. Loaded later, that storage is made only in the threads that
// use CUDA; and a CPU-only machine needs no CUDA library at all.

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace medusa::kernels {

// What the plugin exports, through one C function (kCudaPluginSymbol). The sizes catch a
// plugin built from another version of the interface.
struct CudaPluginApi {
  int abi = 0;
  size_t backend_options_size = 0;
  size_t forward_batch_size = 0;
  int (*visible_devices)() = nullptr;
  absl::StatusOr<std::unique_ptr<Backend>> (*create)(const BackendOptions& options) = nullptr;
};

inline constexpr int kCudaPluginAbi = 3;
inline constexpr char kCudaPluginSymbol[] = "medusa_cuda_plugin_v1";
inline constexpr char kCudaPluginFile[] = "libmedusa_cuda.so";

// The plugin, loaded once: from $MEDUSA_CUDA_PLUGIN when set, else from ../lib beside the
// running executable. Unavailable, naming the file and the loader's error, when it cannot be
// loaded (no CUDA libraries on this machine) or this build has none.
absl::StatusOr<const CudaPluginApi*> LoadCudaPlugin();

}  // namespace medusa::kernels
