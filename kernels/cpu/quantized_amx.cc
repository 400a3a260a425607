#include "kernels/cpu/quantized_amx.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>

#include "kernels/math/simd.h"  // <immintrin.h>, with GCC 12's false warnings silenced

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__)
#define MEDUSA_AMX_BUILD 1
#include <cpuid.h>
#endif

namespace medusa::kernels::cpu {
namespace {

std::atomic<bool>& AmxSwitch() {
  static std::atomic<bool> on = [] {
    const char* setting = std::getenv("MEDUSA_CPU_AMX");
    return setting != nullptr && std::string_view(setting) == "1";
  }();
  return on;
}

}  // namespace

bool AmxEnabled() { return AmxSwitch().load(std::memory_order_relaxed) && AmxSupported(); }
void SetAmxEnabled(bool enabled) { AmxSwitch().store(enabled, std::memory_order_relaxed); }

#if defined(MEDUSA_AMX_BUILD)
namespace {

bool DetectAmx() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  constexpr unsigned kAmxTile = 1u << 24, kAmxInt8 = 1u << 25;
  if ((d & kAmxTile) == 0 || (d & kAmxInt8) == 0) return false;
  // Linux hands out the tiles' 8 KiB of register state only to processes that ask.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtileData = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtileData) == 0;
}

// Two sets of tiles: 0 (and 3) = 16 activation rows x one block (32 bytes), 1 (and 4) = one
// panel's block of weights (8 rows of 16 outputs x 4 bytes), 2 (and 5) = their int32 sums.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {kQuantBlock, 64, 64, kQuantBlock, 64, 64};
  uint8_t rows[16] = {16, 8, 16, 16, 8, 16};
};
constexpr int kTileRows = 16;

// One panel's block of weights as the unsigned bytes a B tile holds: Q8 panels already are;
// Q4 nibbles are spread into bytes (low nibbles: inputs 0..15, high: 16..31).
__attribute__((target("amx-tile,amx-int8"))) const uint8_t* WeightTile(const PanelView& w, int p, int b,
                                                                       uint8_t* staging) {
  const uint8_t* quants = w.Quants(p, b);
  if (!IsQ4(w.type)) return quants;
  const __m512i low = _mm512_set1_epi8(0x0f);
  for (int c = 0; c < 4; ++c) {
    const __m512i raw = _mm512_load_si512(quants + c * 64);
    _mm512_store_si512(staging + c * 64, _mm512_and_si512(raw, low));
    _mm512_store_si512(staging + (c + 4) * 64, _mm512_and_si512(_mm512_srli_epi16(raw, 4), low));
  }
  return staging;
}

__mmask16 LaneMask(int lanes) {
  return lanes >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << lanes) - 1u);
}

// Block b's tile multiply on tile set `set` (0: tiles 0-2, 1: tiles 3-5).
__attribute__((target("amx-tile,amx-int8"))) inline void IssueBlock(int set, const uint8_t* activations, int in,
                                                                    const uint8_t* weights) {
  if (set == 0) {
    _tile_loadd(0, activations, in);
    _tile_loadd(1, weights, 64);
    _tile_zero(2);
    _tile_dpbsud(2, 0, 1);
  } else {
    _tile_loadd(3, activations, in);
    _tile_loadd(4, weights, 64);
    _tile_zero(5);
    _tile_dpbsud(5, 3, 4);
  }
}

__attribute__((target("amx-tile,amx-int8"))) inline void StoreSums(int set, int32_t* sums) {
  if (set == 0) {
    _tile_stored(2, sums, 64);
  } else {
    _tile_stored(5, sums, 64);
  }
}

// y rows [r0, r0 + kRows) of panel p (+)= every block: per block, one tile multiply gives the
// int32 sums of all the rows, and the VNNI kernel's float operations, in its order, fold them
// into accumulators that stay in registers. Two tile sets alternate, so the tiles multiply
// block b + 1 while the vector units finish block b.
template <int kRows>
__attribute__((target("amx-tile,amx-int8"))) void PanelRows(const QuantizedActivations& x, const PanelView& w, int p,
                                                            int r0, float* y, int ldy, bool accumulate, __mmask16 mask,
                                                            uint8_t (*staging)[512], int32_t (*sums)[kTileRows * 16]) {
  const bool q4 = IsQ4(w.type);
  const int in = x.blocks * kQuantBlock;
  const uint8_t* activations = x.q.data() + static_cast<size_t>(r0) * in;
  __m512 acc[kRows];
  for (int r = 0; r < kRows; ++r) {
    acc[r] = accumulate ? _mm512_maskz_loadu_ps(mask, y + static_cast<size_t>(r0 + r) * ldy + p * kQuantPanel)
                        : _mm512_setzero_ps();
  }
  IssueBlock(0, activations, in, WeightTile(w, p, 0, staging[0]));
  for (int b = 0; b < x.blocks; ++b) {
    const int set = b % 2;
    if (b + 1 < x.blocks) {
      IssueBlock(1 - set, activations + (b + 1) * kQuantBlock, in, WeightTile(w, p, b + 1, staging[1 - set]));
    }
    StoreSums(set, sums[set]);
    const uint8_t* s = w.Scales(p, b);
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
    const __m512 mw =
        q4 ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32))) : _mm512_setzero_ps();
    for (int r = 0; r < kRows; ++r) {
      const int at = (r0 + r) * x.blocks + b;
      __m512i isum = _mm512_load_si512(sums[set] + r * 16);
      if (!q4) isum = _mm512_add_epi32(isum, _mm512_set1_epi32(x.bias[at]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(x.d[at])), acc[r]);
      if (q4) acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.dsum[at]), acc[r]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    _mm512_mask_storeu_ps(y + static_cast<size_t>(r0 + r) * ldy + p * kQuantPanel, mask, acc[r]);
  }
}

using PanelRowsFn = void (*)(const QuantizedActivations&, const PanelView&, int, int, float*, int, bool, __mmask16,
                             uint8_t (*)[512], int32_t (*)[kTileRows * 16]);
template <size_t... R>
constexpr auto MakePanelRows(std::index_sequence<R...>) {
  return std::array<PanelRowsFn, sizeof...(R)>{PanelRows<R + 1>...};
}
constexpr auto kPanelRows = MakePanelRows(std::make_index_sequence<kTileRows>());

}  // namespace

bool AmxSupported() {
  static const bool supported = DetectAmx();
  return supported;
}

__attribute__((target("amx-tile,amx-int8"))) void AmxLinearPanels(const QuantizedActivations& x, const PanelView& w,
                                                                  int out, int p_begin, int p_end, float* y, int ldy,
                                                                  bool accumulate) {
  static const TileConfig kConfig;
  _tile_loadconfig(&kConfig);
  alignas(64) uint8_t staging[2][512];
  alignas(64) int32_t sums[2][kTileRows * 16];
  for (int p = p_begin; p < p_end; ++p) {
    const __mmask16 mask = LaneMask(std::min(kQuantPanel, out - p * kQuantPanel));
    for (int r0 = 0; r0 < x.rows; r0 += kTileRows) {
      const int rows = std::min(kTileRows, x.rows - r0);
      kPanelRows[rows - 1](x, w, p, r0, y, ldy, accumulate, mask, staging, sums);
    }
  }
  _tile_release();
}

#else  // no AVX-512 in this build: the VNNI kernel or the reference runs instead

bool AmxSupported() { return false; }
void AmxLinearPanels(const QuantizedActivations&, const PanelView&, int, int, int, float*, int, bool) {}

#endif

}  // namespace medusa::kernels::cpu
