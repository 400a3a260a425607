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

#include "kernels/math/aligned_vector.h"
#include "kernels/math/thread_pool.h"

namespace medusa::kernels::cpu {

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Packs the row-major w[out * in].
  PackedMatrix(const float* w, int out, int in);

  int out() const { return out_; }
  int in() const { return in_; }
  bool empty() const { return data_.empty(); }
  size_t bytes() const { return data_.size() * sizeof(float); }

  // Row `o` of W (in floats), unpacked into `row`: the embedding lookup of a tied classifier.
  void CopyRow(int o, float* row) const;

  // Panel p: [in][panel_width()] floats.
  const float* data() const { return data_.data(); }
  static int panel_width();

 private:
  int out_ = 0;
  int in_ = 0;
  math::AlignedFloats data_;
};

// Y[r, o] = sum_i X[r, i] * W[o, i] (or += when `accumulate`) for r < rows, o < w.out().
// X rows are `ldx` floats apart, Y rows `ldy`. Output columns are split across the pool.
void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            math::ThreadPool* pool);

}  // namespace medusa::kernels::cpu
