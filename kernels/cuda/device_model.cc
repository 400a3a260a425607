#include "kernels/cuda/device_model.h"

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/base/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/model/rope.h"

namespace medusa::kernels::cuda {
namespace {

absl::StatusOr<DeviceBuffer> Upload(const void* data, size_t bytes) {
  DeviceBuffer buffer;
  RETURN_IF_ERROR(buffer.Allocate(bytes));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(buffer.get(), data, bytes, cudaMemcpyHostToDevice));
  return buffer;
}

}  // namespace

absl::StatusOr<DeviceMatrix> UploadMatrix(std::initializer_list<std::vector<float>*> parts, int in, WeightType type) {
  size_t values = 0;
  for (const auto* p : parts) values += p->size();
  DeviceMatrix m;
  m.out = static_cast<int>(values / in);
  m.in = in;
  m.type = type;
  RETURN_IF_ERROR(m.data.Allocate(values * TypeBytes(type)));
  std::vector<uint8_t> staging;
  size_t at = 0;
  for (auto* p : parts) {
    const size_t bytes = p->size() * TypeBytes(type);
    staging.resize(bytes);
    ConvertFloats(*p, type, staging.data());
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(static_cast<uint8_t*>(m.data.get()) + at, staging.data(), bytes, cudaMemcpyHostToDevice));
    at += bytes;
    std::vector<float>().swap(*p);
  }
  return m;
}

absl::StatusOr<DeviceMatrix> GatherMatrixRows(const DeviceMatrix& m, const std::vector<int32_t>& ids) {
  DeviceMatrix rows;
  rows.out = static_cast<int>(ids.size());
  rows.in = m.in;
  rows.type = m.type;
  const size_t row_bytes = static_cast<size_t>(m.in) * TypeBytes(m.type);
  RETURN_IF_ERROR(rows.data.Allocate(ids.size() * row_bytes));
  for (size_t i = 0; i < ids.size(); ++i) {
    CUDA_RETURN_IF_ERROR(cudaMemcpy(static_cast<uint8_t*>(rows.data.get()) + i * row_bytes,
                                    static_cast<const uint8_t*>(m.get()) + ids[i] * row_bytes, row_bytes,
                                    cudaMemcpyDeviceToDevice));
  }
  return rows;
}

absl::StatusOr<DeviceBuffer> UploadFloats(const std::vector<float>& values) {
  return Upload(values.data(), values.size() * sizeof(float));
}

absl::StatusOr<DeviceModel> UploadModel(const ModelConfig& config, ModelWeights weights, WeightType type) {
  // The device computes in its own type (fp16, bf16 or fp32), whatever the host
  // kept.
  ConvertWeightsToFloat(config, &weights);
  DeviceModel model;
  const std::vector<double> frequencies = RopeFrequencies(config);
  ASSIGN_OR_RETURN(model.rope_frequencies, Upload(frequencies.data(), frequencies.size() * sizeof(double)));
  ASSIGN_OR_RETURN(model.final_norm, UploadFloats(weights.final_norm));
  if (weights.classifier.empty()) {
    ASSIGN_OR_RETURN(model.classifier, UploadMatrix({&weights.token_embedding.values}, config.dim, type));
  } else {
    ASSIGN_OR_RETURN(model.embedding, UploadMatrix({&weights.token_embedding.values}, config.dim, type));
    ASSIGN_OR_RETURN(model.classifier, UploadMatrix({&weights.classifier.values}, config.dim, type));
  }
  model.layers.reserve(config.n_layers);
  for (LayerWeights& w : weights.layers) {
    DeviceLayer layer;
    ASSIGN_OR_RETURN(layer.attn_norm, UploadFloats(w.attn_norm));
    ASSIGN_OR_RETURN(layer.wqkv, UploadMatrix({&w.wq.values, &w.wk.values, &w.wv.values}, config.dim, type));
    ASSIGN_OR_RETURN(layer.wo, UploadMatrix({&w.wo.values}, config.q_dim(), type));
    ASSIGN_OR_RETURN(layer.ffn_norm, UploadFloats(w.ffn_norm));
    ASSIGN_OR_RETURN(layer.w_gate_up, UploadMatrix({&w.w_gate.values, &w.w_up.values}, config.dim, type));
    ASSIGN_OR_RETURN(layer.w_down, UploadMatrix({&w.w_down.values}, config.hidden_dim, type));
    model.layers.push_back(std::move(layer));
  }
  return model;
}

}  // namespace medusa::kernels::cuda
