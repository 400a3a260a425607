#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/quantized_matmul.h"
#include "kernels/math/simd.h"

namespace medusa::kernels::cpu {

namespace {

using math::simd::Vec;

// How a float panel's weights are read: float32 as they are, or 16-bit floats
// widened exactly to float32, so a 16-bit mode computes what float32 computes
// on the same (rounded) weights.
struct F32Weights {
  using T = float;
  static Vec Load(const float* p) { return math::simd::LoadAligned(p); }
};
struct BF16Weights {
  using T = uint16_t;
  static Vec Load(const uint16_t* p) { return math::simd::LoadBF16(p); }
};
struct F16Weights {
  using T = uint16_t;
  static Vec Load(const uint16_t* p) { return math::simd::LoadF16(p); }
};

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
template <typename W, int kRows, int kPanels>
void TileKernel(const float* x, size_t ldx, int k0, int k1, const void* weights, size_t panel_stride, float* y,
                size_t ldy, bool load_y, int cols) {
  const auto* w = static_cast<const typename W::T*>(weights);
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
    for (int j = 0; j < kPanels; ++j) wv[j] = W::Load(w + j * panel_stride + static_cast<size_t>(k) * kPanel);
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

using TileFn = void (*)(const float*, size_t, int, int, const void*, size_t, float*, size_t, bool, int);

// The 3-panel tile only where it fits the registers; taller tiles are used 2 panels wide.
template <typename W, int kRows>
constexpr TileFn ThreePanelTile() {
  if constexpr (kRows <= kTileRows) {
    return TileKernel<W, kRows, 3>;
  } else {
    return nullptr;
  }
}

template <typename W, int kRows>
constexpr TileFn kTileRow[kTilePanels] = {TileKernel<W, kRows, 1>, TileKernel<W, kRows, 2>, ThreePanelTile<W, kRows>()};

template <typename W, size_t... R>
constexpr auto MakeTiles(std::index_sequence<R...>) {
  return std::array<const TileFn*, sizeof...(R)>{kTileRow<W, R + 1>...};
}
template <typename W>
constexpr auto kTiles = MakeTiles<W>(std::make_index_sequence<kTallTileRows>());

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
template <typename W>
void LinearPanels(const float* x, int rows, int ldx, const PackedMatrix& w, TilePlan plan, int p_begin, int p_end,
                  float* y, int ldy, bool accumulate) {
  const int in = w.in();
  const size_t panel_stride = static_cast<size_t>(in) * kPanel;
  const auto* weights = reinterpret_cast<const typename W::T*>(w.data());
  // With one row tile the panels are used once: no point in chunking the inputs.
  const int chunk = rows <= plan.rows ? in : kInputChunk;
  for (int pg = p_begin; pg < p_end; pg += plan.panels) {
    const int panels = std::min(plan.panels, p_end - pg);
    const int cols = std::min(panels * kPanel, w.out() - pg * kPanel);
    const auto* wp = weights + pg * panel_stride;
    for (int k0 = 0; k0 < in; k0 += chunk) {
      const int k1 = std::min(in, k0 + chunk);
      const bool load_y = accumulate || k0 > 0;
      for (int r = 0; r < rows; r += plan.rows) {
        const int tile_rows = std::min(plan.rows, rows - r);
        kTiles<W>[tile_rows - 1][panels - 1](x + static_cast<size_t>(r) * ldx, ldx, k0, k1, wp, panel_stride,
                                             y + static_cast<size_t>(r) * ldy + pg * kPanel, ldy, load_y, cols);
      }
    }
  }
}

bool IsFloatType(WeightType type) {
  return type == WeightType::kF32 || type == WeightType::kF16 || type == WeightType::kBF16;
}

size_t ElementBytes(WeightType type) { return type == WeightType::kF32 ? 4 : 2; }

// Float panels [in][kPanel] of `element` bytes per value; lanes past `out` stay
// zero.
void PackFloatPanels(const uint8_t* rows, size_t element, int out, int in, math::AlignedBytes* data) {
  const int panels = (out + kPanel - 1) / kPanel;
  data->assign(static_cast<size_t>(panels) * in * kPanel * element, 0);
  for (int o = 0; o < out; ++o) {
    uint8_t* panel = data->data() + (static_cast<size_t>(o / kPanel) * in * kPanel + o % kPanel) * element;
    const uint8_t* row = rows + static_cast<size_t>(o) * in * element;
    for (int k = 0; k < in; ++k)
      std::memcpy(panel + static_cast<size_t>(k) * kPanel * element, row + k * element, element);
  }
}

// Activations of the calling thread's products with quantized weights.
QuantizedActivations& ActivationScratch() {
  thread_local QuantizedActivations scratch;
  return scratch;
}

void QuantizedLinear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
                     math::ThreadPool* pool) {
  QuantizedActivations& xq = ActivationScratch();
  QuantizeActivations(x, rows, ldx, w.in(), &xq);
  constexpr int kGroup = 2;  // panels per tile (quantized_matmul.cc)
  const int panels = (w.out() + kQuantPanel - 1) / kQuantPanel;
  const int groups = (panels + kGroup - 1) / kGroup;
  const long long work = static_cast<long long>(rows) * w.in() * w.out();
  const int threads = work < (1 << 16) ? 1 : std::min(pool->size(), groups);
  pool->Run(threads, [&](int t, int n) {
    const int p_begin = groups * t / n * kGroup;
    const int p_end = std::min(panels, groups * (t + 1) / n * kGroup);
    if (p_begin < p_end) {
      QuantizedLinearPanels(xq, w.type(), w.data(), w.out(), w.in(), p_begin, p_end, y, ldy, accumulate);
    }
  });
}

template <typename W>
void FloatLinear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
                 math::ThreadPool* pool) {
  const TilePlan plan = PlanFor(rows);
  const int groups = (w.out() + kPanel * plan.panels - 1) / (kPanel * plan.panels);
  const int panels = (w.out() + kPanel - 1) / kPanel;
  // Few enough multiply-adds that a fork/join costs more than it saves.
  const long long work = static_cast<long long>(rows) * w.in() * w.out();
  const int threads = work < (1 << 16) ? 1 : std::min(pool->size(), groups);
  pool->Run(threads, [&](int t, int n) {
    const int p_begin = groups * t / n * plan.panels;
    const int p_end = std::min(panels, groups * (t + 1) / n * plan.panels);
    if (p_begin < p_end) LinearPanels<W>(x, rows, ldx, w, plan, p_begin, p_end, y, ldy, accumulate);
  });
}

}  // namespace

PackedMatrix::PackedMatrix(const float* w, int out, int in)
    : PackedMatrix(WeightType::kF32, reinterpret_cast<const uint8_t*>(w), out, in) {}

PackedMatrix::PackedMatrix(WeightType type, const uint8_t* rows, int out, int in) : type_(type), out_(out), in_(in) {
  if (IsFloatType(type)) {
    PackFloatPanels(rows, ElementBytes(type), out, in, &data_);
  } else {
    data_.resize(QuantizedPanelBytes(type, out, in));
    PackQuantizedPanels(type, rows, out, in, data_.data());
  }
}

void PackedMatrix::CopyStoredRow(int o, uint8_t* row) const {
  if (!IsFloatType(type_)) return UnpackQuantizedRow(type_, data_.data(), out_, in_, o, row);
  const size_t element = ElementBytes(type_);
  const uint8_t* panel = data_.data() + (static_cast<size_t>(o / kPanel) * in_ * kPanel + o % kPanel) * element;
  for (int k = 0; k < in_; ++k)
    std::memcpy(row + k * element, panel + static_cast<size_t>(k) * kPanel * element, element);
}

void PackedMatrix::CopyRow(int o, float* row) const {
  if (type_ == WeightType::kF32) return CopyStoredRow(o, reinterpret_cast<uint8_t*>(row));
  thread_local std::vector<uint8_t> stored;  // no allocation per lookup once grown
  stored.resize(RowBytes(type_, in_));
  CopyStoredRow(o, stored.data());
  DequantizeRow(type_, stored.data(), in_, row);
}

PackedMatrix PackedMatrix::SelectRows(absl::Span<const int32_t> ids) const {
  const size_t row_bytes = RowBytes(type_, in_);
  std::vector<uint8_t> rows(row_bytes * ids.size());
  for (size_t i = 0; i < ids.size(); ++i) CopyStoredRow(ids[i], rows.data() + i * row_bytes);
  return PackedMatrix(type_, rows.data(), static_cast<int>(ids.size()), in_);
}

int PackedMatrix::panel_width() { return kPanel; }

void Linear(const float* x, int rows, int ldx, const PackedMatrix& w, float* y, int ldy, bool accumulate,
            math::ThreadPool* pool) {
  if (rows <= 0) return;
  switch (w.type()) {
    case WeightType::kF32:
      return FloatLinear<F32Weights>(x, rows, ldx, w, y, ldy, accumulate, pool);
    case WeightType::kBF16:
      return FloatLinear<BF16Weights>(x, rows, ldx, w, y, ldy, accumulate, pool);
    case WeightType::kF16:
      return FloatLinear<F16Weights>(x, rows, ldx, w, y, ldy, accumulate, pool);
    default:
      return QuantizedLinear(x, rows, ldx, w, y, ldy, accumulate, pool);
  }
}

}  // namespace medusa::kernels::cpu
