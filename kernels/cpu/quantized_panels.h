#pragma once
// Where things lie in quantized_matmul.h's panels: per panel of 16 outputs, every block's
// quantized weights (256 bytes for Q4, 512 for Q8), then every block's f16 scales (and Q4's
// minimums after them). Shared by the VNNI and AMX kernels.

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/quantized_matmul.h"

namespace medusa::kernels::cpu {

inline bool IsQ4(WeightType type) { return type == WeightType::kQ4_0 || type == WeightType::kQ4_1; }
inline int QuantBytes(WeightType type) { return IsQ4(type) ? 256 : 512; }  // a panel's quants per block
inline int ScaleBytes(WeightType type) { return IsQ4(type) ? 64 : 32; }    // its f16 scales (and minimums)

// Panels start on cache lines.
inline size_t PanelBytes(WeightType type, int in) {
  const size_t raw = static_cast<size_t>(in / kQuantBlock) * (QuantBytes(type) + ScaleBytes(type));
  return (raw + 63) / 64 * 64;
}

struct PanelView {
  WeightType type;
  const uint8_t* data;
  int blocks;
  size_t panel_bytes;
  const uint8_t* Quants(int p, int b) const {
    return data + p * panel_bytes + static_cast<size_t>(b) * QuantBytes(type);
  }
  const uint8_t* Scales(int p, int b) const {
    return data + p * panel_bytes + static_cast<size_t>(blocks) * QuantBytes(type) +
           static_cast<size_t>(b) * ScaleBytes(type);
  }
};

}  // namespace medusa::kernels::cpu
