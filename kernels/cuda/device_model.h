#pragma once
// A Llama model's weights on the GPU: matrices in the chosen WeightType, repacked as the
// forward pass reads them (Q, K and V stacked into one matrix, gate and up into another:
// one product each instead of three or two), norms in fp32.

#include <initializer_list>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/half_precision.h"
#include "kernels/model/config.h"
#include "kernels/model/weights.h"

namespace medusa::kernels::cuda {

// A row-major [out, in] matrix on the device.
struct DeviceMatrix {
  DeviceBuffer data;
  int out = 0;
  int in = 0;
  WeightType type = WeightType::kFloat32;

  const void* get() const { return data.get(); }
  bool empty() const { return out == 0; }
};

struct DeviceLayer {
  DeviceBuffer attn_norm;  // [dim] fp32
  DeviceMatrix wqkv;       // [q_dim + 2 kv_dim, dim]
  DeviceMatrix wo;         // [dim, q_dim]
  DeviceBuffer ffn_norm;   // [dim] fp32
  DeviceMatrix w_gate_up;  // [2 hidden, dim]
  DeviceMatrix w_down;     // [dim, hidden]
};

struct DeviceModel {
  DeviceMatrix embedding;         // [vocab, dim]; empty when tied: the classifier's rows serve
  DeviceMatrix classifier;        // [vocab, dim]
  DeviceBuffer final_norm;        // [dim] fp32
  DeviceBuffer rope_frequencies;  // [head_dim / 2] double
  std::vector<DeviceLayer> layers;

  const DeviceMatrix& embedding_table() const { return embedding.empty() ? classifier : embedding; }
};

// The [out, in] matrix made of `parts` stacked, converted to `type` and uploaded; each host
// part is released once copied, so host memory stays near one part's size.
absl::StatusOr<DeviceMatrix> UploadMatrix(std::initializer_list<std::vector<float>*> parts, int in, WeightType type);
// Rows `ids` of a device matrix, as a new matrix (a Medusa draft vocabulary's classifier rows).
absl::StatusOr<DeviceMatrix> GatherMatrixRows(const DeviceMatrix& m, const std::vector<int32_t>& ids);
// Values uploaded as they are.
absl::StatusOr<DeviceBuffer> UploadFloats(const std::vector<float>& values);

// Uploads every weight (config and weights checked by the caller), releasing the host copies.
absl::StatusOr<DeviceModel> UploadModel(const ModelConfig& config, ModelWeights weights, WeightType type);

}  // namespace medusa::kernels::cuda
