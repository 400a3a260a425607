#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/vector_ops.h"

namespace medusa::kernels::cpu {

#if defined(__AVX512F__)
namespace {

constexpr int kPanel = 16;        // outputs per panel (one register)
constexpr int kTileRows = 8;      // input rows per register tile
constexpr int kTilePanels = 3;    // panels per register tile: 8 x 3 = 24 accumulators
constexpr int kInputChunk = 128;  // inputs per pass: 3 panels x 128 x 64 B = 24 KiB stay in L1

// Y tile [kRows][kPanels * 16] (+)= X[kRows][k0:k1] * panels[k0:k1]. Only the first `cols`
// outputs of the tile exist (the last panel of a matrix may be partly padding).
template <int kRows, int kPanels>
void TileKernel(const float* x, size_t ldx, int k0, int k1, const float* w, size_t panel_stride, float* y,
                size_t ldy, bool load_y, int cols) {
  __mmask16 mask[kPanels];
  for (int j = 0; j < kPanels; ++j) {
    const int c = cols - j * kPanel;
    mask[j] = c >= kPanel ? static_cast<__mmask16>(0xFFFF) : TailMask(c);
  }
  __m512 acc[kRows][kPanels];
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kPanels; ++j) {
      acc[r][j] = load_y ? _mm512_maskz_loadu_ps(mask[j], y + r * ldy + j * kPanel) : _mm512_setzero_ps();
    }
  }
  for (int k = k0; k < k1; ++k) {
    __m512 wv[kPanels];
    for (int j = 0; j < kPanels; ++j) wv[j] = _mm512_load_ps(w + j * panel_stride + static_cast<size_t>(k) * kPanel);
    for (int r = 0; r < kRows; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * ldx + k]);
      for (int j = 0; j < kPanels; ++j) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kPanels; ++j) _mm512_mask_storeu_ps(y + r * ldy + j * kPanel, mask[j], acc[r][j]);
  }
}

using TileFn = void (*)(const float*, size_t, int, int, const float*, size_t, float*, size_t, bool, int);

template <int kRows>
constexpr TileFn kTileRow[kTilePanels] = {TileKernel<kRows, 1>, TileKernel<kRows, 2>, TileKernel<kRows, 3>};
constexpr const TileFn* kTiles[kTileRows] = {kTileRow<1>, kTileRow<2>, kTileRow<3>, kTileRow<4>,
                                             kTileRow<5>, kTileRow<6>, kTileRow<7>, kTileRow<8>};

// Output panels [p_begin, p_end) for every row.
void LinearPanels(const float* x, int rows, int ldx, const PackedMatrix& w, int p_begin, int p_end, float* y,
                  int ldy, bool accumulate) {
  const int in = w.in();
  const size_t panel_stride = static_cast<size_t>(in) * kPanel;
  // With one row tile the panels are used once: no point in chunking the inputs.
  const int chunk = rows <= kTileRows ? in : kInputChunk;
  for (int pg = p_begin; pg < p_end; pg += kTilePanels) {
    const int panels = std::min(kTilePanels, p_end - pg);
    const int cols = std::min(panels * kPanel, w.out() - pg * kPanel);
    const float* wp = w.data() + pg * panel_stride;
    for (int k0 = 0; k0 < in; k0 += chunk) {
      const int k1 = std::min(in, k0 + chunk);
      const bool load_y = accumulate || k0 > 0;
      for (int r = 0; r < rows; r += kTileRows) {
        const int tile_rows = std::min(kTileRows, rows - r);
        kTiles[tile_rows - 1][panels - 1](x + static_cast<size_t>(r) * ldx, ldx, k0, k1, wp, panel_stride,
                                          y + static_cast<size_t>(r) * ldy + pg * kPanel, ldy, load_y, cols);
      }
    }
  }
}

}  // namespace

PackedMatrix::PackedMatrix(const float* w, int out, int in) : out_(out), in_(in) {
  const int panels = (out + kPanel - 1) / kPanel;
  data_.assign(static_cast<size_t>(panels) * in * kPanel, 0.0f);
  for (int o = 0; o < out; ++o) {
    float* panel = data_.data() + static_cast<size_t>(o / kPanel) * in * kPanel + o % kPanel;
    const float* row = w + static_cast<size_t>(o) * in;
    for (int k = 0; k < in; ++k) panel[static_cast<size_t>(k) * kPanel] = row[k];
  }
}

void PackedMatrix::CopyRow(int o, float* row) const {
  const float* panel = data_.data() + static_cast<size_t>(o / kPanel) * in_ * kPanel + o % kPanel;
  for (int k = 0; k < in_; ++k) row[k] = panel[static_cast<size_t>(k) * kPanel];
}

void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            ThreadPool* pool) {
  if (rows <= 0) return;
  const int groups = (w.out() + kPanel * kTilePanels - 1) / (kPanel * kTilePanels);
  const int panels = (w.out() + kPanel - 1) / kPanel;
  // Few enough multiply-adds that a fork/join costs more than it saves.
  const long long work = static_cast<long long>(rows) * w.in() * w.out();
  const int threads = work < (1 << 16) ? 1 : std::min(pool->size(), groups);
  pool->Run(threads, [&](int t, int n) {
    const int p_begin = groups * t / n * kTilePanels;
    const int p_end = std::min(panels, groups * (t + 1) / n * kTilePanels);
    if (p_begin < p_end) LinearPanels(x, rows, ldx, w, p_begin, p_end, y, ldy, accumulate);
  });
}

#else  // Portable build: row-major weights and OpenBLAS.

PackedMatrix::PackedMatrix(const float* w, int out, int in)
    : out_(out), in_(in), data_(w, w + static_cast<size_t>(out) * in) {}

void PackedMatrix::CopyRow(int o, float* row) const {
  std::copy_n(data_.data() + static_cast<size_t>(o) * in_, in_, row);
}

void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            ThreadPool* pool) {
  if (rows <= 0) return;
  const long long work = static_cast<long long>(rows) * w.in() * w.out();
  const int threads = work < (1 << 16) ? 1 : pool->size();
  pool->Run(threads, [&](int t, int n) {
    const int o_begin = static_cast<int>(static_cast<long long>(w.out()) * t / n);
    const int o_end = static_cast<int>(static_cast<long long>(w.out()) * (t + 1) / n);
    if (o_begin >= o_end) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, o_end - o_begin, w.in(), 1.0f, x, ldx,
                w.data() + static_cast<size_t>(o_begin) * w.in(), w.in(), accumulate ? 1.0f : 0.0f, y + o_begin, ldy);
  });
}

#endif

void ConfigureBlasThreads() { openblas_set_num_threads(1); }

}  // namespace medusa::kernels::cpu
