#pragma once
// Dense products y = W x for weights W[out, in], repacked once at load time.
//
// The weights are stored in panels of math::simd::kLanes output rows (16 with AVX-512, 8 with
// AVX2), each panel [in][kLanes] (input-major): one vector multiply-add takes one input value
// of a row against a panel's outputs, so products need no horizontal sums and no per-call
// packing. The micro-kernel keeps a tile of rows x 3 panels in registers (8 rows with
// AVX-512, 4 with AVX2) and walks the inputs in L1-sized chunks; a product of up to 1.5 tiles
// of rows (12 or 6) takes one taller tile 2 panels wide instead. Every output is one chain of
// multiply-adds in input order, so a row's result is bit-identical whatever rows share the
// call: plain decoding (1 row) and Medusa verification (many) agree to the last bit.
// Measured with AVX-512 on SmolLM2-135M shapes, 2 threads, against OpenBLAS 0.3.21 sgemm
// split the same way: 1.1-1.4x at 128 rows, 1.5-6x at the 4-64 rows of Medusa verification
// batches (sgemm packs the whole weight on every call), 0.9-1.25x at 512 rows; at one row it
// streams the weights at memory speed.

#include <cstddef>
#include <cstdint>

#include "absl/types/span.h"
#include "kernels/math/aligned_vector.h"
#include "kernels/math/thread_pool.h"
#include "kernels/model/weight_format.h"

namespace medusa::kernels::cpu {

// A weight matrix [out, in] packed for these products. Float32, bfloat16 and
// f16 weights use the float panels above (16-bit values widened exactly as they
// are read); Q8_0, Q4_0 and Q4_1 weights use quantized_matmul.h's panels and
// integer dot products.
class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Packs the row-major float32 w[out * in].
  PackedMatrix(const float* w, int out, int in);
  // Packs `out` rows of `in` values stored as `type` (weight_format.h's row
  // layout).
  PackedMatrix(WeightType type, const uint8_t* rows, int out, int in);

  WeightType type() const { return type_; }
  int out() const { return out_; }
  int in() const { return in_; }
  bool empty() const { return data_.empty(); }
  size_t bytes() const { return data_.size(); }

  // Row `o` of W as float32 into `row` (in floats): the embedding lookup of a
  // tied classifier.
  void CopyRow(int o, float* row) const;
  // Row `o` in type()'s row layout (RowBytes(type(), in) bytes).
  void CopyStoredRow(int o, uint8_t* row) const;
  // The rows `ids`, in that order, in this matrix's type.
  PackedMatrix SelectRows(absl::Span<const int32_t> ids) const;

  const uint8_t* data() const { return data_.data(); }
  // Outputs per float panel: [in][panel_width()] values.
  static int panel_width();

 private:
  WeightType type_ = WeightType::kF32;
  int out_ = 0;
  int in_ = 0;
  math::AlignedBytes data_;
};

// Y[r, o] = sum_i X[r, i] * W[o, i] (or += when `accumulate`) for r < rows, o < w.out().
// X rows are `ldx` floats apart, Y rows `ldy`. Output columns are split across the pool.
void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            math::ThreadPool* pool);

}  // namespace medusa::kernels::cpu
