#pragma once
// Products with weights kept in ggml's block types (Q8_0, Q4_0, Q4_1), as
// llama.cpp computes them: each row of activations is quantized per block of 32
// to int8 with a float scale, each block's dot product is exact integer
// arithmetic (AVX-512 VNNI `vpdpbusd`: unsigned weight bytes times signed
// activation bytes), and the blocks are summed in float in input order:
//   Q8_0: y += float(sum q_w q_x) * (d_w * d_x)
//   Q4_*: y += float(sum n_w q_x) * (d_w * d_x), then y += m_w * (d_x * sum
//   q_x)
// (a Q4_0 weight (n - 8) d is n d + m with m = -8 d). Every output is that one
// chain of float operations whatever rows share the call and whatever the
// instruction set, so a row's result is bitwise the same alone or in any batch:
// Medusa greedy equals plain greedy in these modes.
//
// Panels of 16 outputs, per block: the quantized weights as 64-byte registers
// (lane l holds 4 consecutive inputs of output l; Q4 registers hold inputs
// 4c..4c+3 in their low nibbles and 16+4c..16+4c+3 in their high ones, exactly
// ggml's byte order), then the 16 f16 scales (and 16 f16 minimums). Q8 weights
// are stored + 128 (unsigned); the activations' block sums take the 128 back
// out.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/math/aligned_vector.h"
#include "kernels/model/weight_format.h"

namespace medusa::kernels::cpu {

constexpr int kQuantPanel = 16;  // outputs per panel
constexpr int kQuantBlock = 32;  // inputs per block

// A batch of activation rows, quantized per block of 32 (ggml's q8_1 with a
// float scale).
struct QuantizedActivations {
  int rows = 0;
  int blocks = 0;             // per row: in / 32
  math::AlignedBytes q;       // int8 [rows][blocks * 32]
  std::vector<float> d;       // [rows][blocks]: the scale, amax / 127
  std::vector<float> dsum;    // [rows][blocks]: d * sum(q), for Q4 minimums
  std::vector<int32_t> bias;  // [rows][blocks]: -128 * sum(q), for Q8's unsigned weights
};
void QuantizeActivations(const float* x, int rows, int ldx, int in, QuantizedActivations* out);

// Bytes of the packed panels of an [out, in] matrix of `type` (a block type; in
// % 32 == 0).
size_t QuantizedPanelBytes(WeightType type, int out, int in);
// Packs rows stored as `type` (weight_format.h's layout) into `panels`
// (QuantizedPanelBytes long).
void PackQuantizedPanels(WeightType type, const uint8_t* rows, int out, int in, uint8_t* panels);
// Row `o` back in `type`'s row layout (RowBytes(type, in) bytes).
void UnpackQuantizedRow(WeightType type, const uint8_t* panels, int out, int in, int o, uint8_t* row);

// Y[r, o] (+)= sum over blocks as above, for output panels [p_begin, p_end) of
// every row.
void QuantizedLinearPanels(const QuantizedActivations& x, WeightType type, const uint8_t* panels, int out, int in,
                           int p_begin, int p_end, float* y, int ldy, bool accumulate);
// The same in plain C++ (std::fma), the reference the SIMD kernel must equal
// bit for bit.
void QuantizedLinearReference(const QuantizedActivations& x, WeightType type, const uint8_t* panels, int out, int in,
                              float* y, int ldy, bool accumulate);
// Whether QuantizedLinearPanels runs the VNNI kernel ("avx512-vnni") or the
// reference ("portable").
// The integer kernels: AVX-512 VNNI (`vpdpbusd`), AVX2 (`vpmaddubsw`), and the plain C++
// reference. All give the same results bit for bit.
enum class QuantizedKernel { kVnni, kAvx2, kReference };
// Those this build holds and this processor runs, fastest first.
std::vector<QuantizedKernel> AvailableQuantizedKernels();
// The one products use: the fastest available unless set (process-wide; for tests and
// benchmarks). SetQuantizedKernel returns false, changing nothing, for one not available.
QuantizedKernel ActiveQuantizedKernel();
bool SetQuantizedKernel(QuantizedKernel kernel);
const char* QuantizedKernelName();

}  // namespace medusa::kernels::cpu
