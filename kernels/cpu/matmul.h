#pragma once
// Dense products y = W x for weights W[out, in], repacked once at load time.
//
// With AVX-512 the weights are stored in panels of 16 output rows, each panel [in][16]
// (input-major): one 16-wide multiply-add takes one input value of a row against 16 outputs,
// so products need no horizontal sums and no per-call packing. The micro-kernel keeps an
// 8-row x 48-output tile in registers and walks the inputs in L1-sized chunks. Measured on
// SmolLM2-135M shapes, 2 threads, against OpenBLAS 0.3.21 sgemm split the same way: 1.1-1.4x
// at 128 rows, 1.5-6x at the 4-64 rows of Medusa verification batches (sgemm packs the whole
// weight on every call), 0.9-1.25x at 512 rows; at one row it streams the weights at memory
// speed (the 49152x576 classifier: 3.7 ms vs 14.6 ms for sgemm).
// Without AVX-512 the weights stay row-major and products go to OpenBLAS.

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/aligned_vector.h"
#include "kernels/cpu/thread_pool.h"

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

  // Panel p: [in][16] floats (AVX-512 layout), or row-major W (the OpenBLAS layout).
  const float* data() const { return data_.data(); }

 private:
  int out_ = 0;
  int in_ = 0;
  AlignedFloats data_;
};

// Y[r, o] = sum_i X[r, i] * W[o, i] (or += when `accumulate`) for r < rows, o < w.out().
// X rows are `ldx` floats apart, Y rows `ldy`. Output columns are split across the pool.
void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            ThreadPool* pool);

// Pins OpenBLAS to one thread (process-wide): where it is used, the products are split across
// the backend's own pool, so one set of threads serves every kernel and none oversubscribe.
void ConfigureBlasThreads();

}  // namespace medusa::kernels::cpu
