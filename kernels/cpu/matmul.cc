#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <array>
#include <utility>

#include "kernels/math/simd.h"

namespace medusa::kernels::cpu {

namespace {

using math::simd::Vec;

// One panel holds kPanel = kLanes outputs (one register per input value). A register tile
// is kTileRows input rows x kTilePanels panels of accumulators: 8 x 3 = 24 of AVX-512's 32
// registers, 4 x 3 = 12 of AVX2's 16 (plus the weights and a broadcast).
constexpr int kPanel = math::simd::kLanes;
#if defined(__AVX512F__)
constexpr int kTileRows = 8;
#else
constexpr int kTileRows = 4;
#endif
constexpr int kTilePanels = 3;
// A taller, narrower tile for a few rows past one tile: 12 x 2 (AVX-512) or 6 x 2 (AVX2)
// accumulators, the same register budget.
constexpr int kTallTileRows = kTileRows * 3 / 2;
constexpr int kTallTilePanels = 2;
constexpr int kInputChunk = 128;  // inputs per pass: 3 panels x 128 inputs stay in L1
// How many inputs ahead a tile of several rows prefetches its panels' weights (16 inputs =
// 16 cache lines a panel). A tile's multiply-adds wait in the scheduler for their weights,
// and with several rows there are so many of them that the core runs few loads ahead: a
// 3-row product of SmolLM2's weights took 1.27x a 1-row one, memory-bound as both are
// (BENCHMARKS.md). Prefetching keeps the misses in flight: 1.06x. One row runs far enough
// ahead by itself (a prefetch there measured no faster), so it does not prefetch.
constexpr int kPrefetchAhead = 16;

// Y tile [kRows][kPanels * kPanel] (+)= X[kRows][k0:k1] * panels[k0:k1]. Only the first `cols`
// outputs of the tile exist (the last panel of a matrix may be partly padding). Each output is
// one chain of multiply-adds over k in order, whatever the tile's shape: a row's result does
// not depend on how many rows share the call.
template <int kRows, int kPanels>
void TileKernel(const float* x, size_t ldx, int k0, int k1, const float* w, size_t panel_stride, float* y,
                size_t ldy, bool load_y, int cols) {
  int lanes[kPanels];
  for (int j = 0; j < kPanels; ++j) lanes[j] = std::min(kPanel, cols - j * kPanel);
  Vec acc[kRows][kPanels];
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kPanels; ++j) {
      acc[r][j] = load_y ? math::simd::MaskedLoad(y + r * ldy + j * kPanel, lanes[j]) : math::simd::Zero();
    }
  }
  for (int k = k0; k < k1; ++k) {
    if constexpr (kRows > 1) {
      for (int j = 0; j < kPanels; ++j) {
        __builtin_prefetch(w + j * panel_stride + static_cast<size_t>(k + kPrefetchAhead) * kPanel, 0, 3);
      }
    }
    Vec wv[kPanels];
    for (int j = 0; j < kPanels; ++j) wv[j] = math::simd::LoadAligned(w + j * panel_stride + static_cast<size_t>(k) * kPanel);
    for (int r = 0; r < kRows; ++r) {
      const Vec xv = math::simd::Set1(x[r * ldx + k]);
      for (int j = 0; j < kPanels; ++j) acc[r][j] = math::simd::Fma(xv, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kPanels; ++j) {
      float* out = y + r * ldy + j * kPanel;
      if (lanes[j] == kPanel) {
        math::simd::Store(out, acc[r][j]);
      } else {
        math::simd::MaskedStore(out, lanes[j], acc[r][j]);
      }
    }
  }
}

using TileFn = void (*)(const float*, size_t, int, int, const float*, size_t, float*, size_t, bool, int);

// The 3-panel tile only where it fits the registers; taller tiles are used 2 panels wide.
template <int kRows>
constexpr TileFn ThreePanelTile() {
  if constexpr (kRows <= kTileRows) {
    return TileKernel<kRows, 3>;
  } else {
    return nullptr;
  }
}

template <int kRows>
constexpr TileFn kTileRow[kTilePanels] = {TileKernel<kRows, 1>, TileKernel<kRows, 2>, ThreePanelTile<kRows>()};

template <size_t... R>
constexpr auto MakeTiles(std::index_sequence<R...>) {
  return std::array<const TileFn*, sizeof...(R)>{kTileRow<R + 1>...};
}
constexpr auto kTiles = MakeTiles(std::make_index_sequence<kTallTileRows>());

// How one call walks its rows: tiles of up to `rows` rows over groups of `panels` panels.
struct TilePlan {
  int rows, panels;
};

// A product of a few rows more than one tile (5 or 6 with AVX2) would need a second, short
// tile per weight chunk. That tile re-reads the chunk from L1 with few multiply-adds per
// load while memory idles, and it forces the chunking: a 5-row forward of SmolLM2-135M cost
// 1.26x a 4-row one on AVX2. One tall tile takes all the rows in a single pass over the
// weights, like a product of 1 to 4 rows.
TilePlan PlanFor(int rows) {
  if (rows > kTileRows && rows <= kTallTileRows) return {kTallTileRows, kTallTilePanels};
  return {kTileRows, kTilePanels};
}

// Output panels [p_begin, p_end) for every row.
void LinearPanels(const float* x, int rows, int ldx, const PackedMatrix& w, TilePlan plan, int p_begin, int p_end,
                  float* y, int ldy, bool accumulate) {
  const int in = w.in();
  const size_t panel_stride = static_cast<size_t>(in) * kPanel;
  // With one row tile the panels are used once: no point in chunking the inputs.
  const int chunk = rows <= plan.rows ? in : kInputChunk;
  for (int pg = p_begin; pg < p_end; pg += plan.panels) {
    const int panels = std::min(plan.panels, p_end - pg);
    const int cols = std::min(panels * kPanel, w.out() - pg * kPanel);
    const float* wp = w.data() + pg * panel_stride;
    for (int k0 = 0; k0 < in; k0 += chunk) {
      const int k1 = std::min(in, k0 + chunk);
      const bool load_y = accumulate || k0 > 0;
      for (int r = 0; r < rows; r += plan.rows) {
        const int tile_rows = std::min(plan.rows, rows - r);
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

int PackedMatrix::panel_width() { return kPanel; }

void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            math::ThreadPool* pool) {
  if (rows <= 0) return;
  const TilePlan plan = PlanFor(rows);
  const int groups = (w.out() + kPanel * plan.panels - 1) / (kPanel * plan.panels);
  const int panels = (w.out() + kPanel - 1) / kPanel;
  // Few enough multiply-adds that a fork/join costs more than it saves.
  const long long work = static_cast<long long>(rows) * w.in() * w.out();
  const int threads = work < (1 << 16) ? 1 : std::min(pool->size(), groups);
  pool->Run(threads, [&](int t, int n) {
    const int p_begin = groups * t / n * plan.panels;
    const int p_end = std::min(panels, groups * (t + 1) / n * plan.panels);
    if (p_begin < p_end) LinearPanels(x, rows, ldx, w, plan, p_begin, p_end, y, ldy, accumulate);
  });
}

}  // namespace medusa::kernels::cpu
