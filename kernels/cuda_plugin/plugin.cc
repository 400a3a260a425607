// libmedusa_cuda.so's one export (kernels/cuda_plugin.h).

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda_plugin.h"

extern "C" __attribute__((visibility("default"))) const medusa::kernels::CudaPluginApi* medusa_cuda_plugin_v1() {
  using medusa::kernels::CudaPluginApi;
  static const CudaPluginApi api = {medusa::kernels::kCudaPluginAbi, sizeof(medusa::kernels::BackendOptions),
                                    sizeof(medusa::kernels::ForwardBatch), &medusa::kernels::cuda::VisibleDevices,
                                    &medusa::kernels::cuda::CreateCudaBackend};
  return &api;
}
