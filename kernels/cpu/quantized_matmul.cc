#include "kernels/cpu/quantized_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quantized_amx.h"
#include "kernels/cpu/quantized_panels.h"

#include "kernels/math/simd.h"  // <immintrin.h>, with GCC 12's false warnings silenced

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define MEDUSA_VNNI 1
#endif

namespace medusa::kernels::cpu {
namespace {

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
void StoreU16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof(v)); }

// Weight k (0..31) of lane `lane` in a panel's block, as the kernel multiplies
// it.
int QuantAt(WeightType type, const uint8_t* quants, int lane, int k) {
  if (IsQ4(type)) {
    const int c = (k % 16) / 4, j = k % 4;
    const uint8_t byte = quants[c * 64 + lane * 4 + j];
    return k < 16 ? (byte & 0x0f) : (byte >> 4);
  }
  return static_cast<int>(quants[(k / 4) * 64 + lane * 4 + k % 4]) - 128;
}

#if defined(MEDUSA_VNNI)

inline __m512i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// Y tile [kRows][kPanels * 16] (+)= blocks [b0, b1) of rows row0.. of `x` times
// panels p0... The float operations per output are QuantizedLinearReference's,
// in its order.
template <int kRows, int kPanels, bool kQ4>
void Tile(const QuantizedActivations& x, int row0, int b0, int b1, const PanelView& w, int p0, float* y, int ldy,
          bool load_y, int cols) {
  const int nb = x.blocks, in = nb * kQuantBlock;
  __mmask16 mask[kPanels];
  for (int j = 0; j < kPanels; ++j) {
    const int lanes = std::min(kQuantPanel, cols - j * kQuantPanel);
    mask[j] = lanes >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << lanes) - 1u);
  }
  __m512 acc[kRows][kPanels];
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kPanels; ++j) {
      acc[r][j] = load_y ? _mm512_maskz_loadu_ps(mask[j], y + r * ldy + j * kQuantPanel) : _mm512_setzero_ps();
    }
  }
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  for (int b = b0; b < b1; ++b) {
    const int8_t* xq[kRows];
    for (int r = 0; r < kRows; ++r) {
      xq[r] = reinterpret_cast<const int8_t*>(x.q.data()) + static_cast<size_t>(row0 + r) * in + b * kQuantBlock;
    }
    __m512i isum[kRows][kPanels];
    for (int r = 0; r < kRows; ++r) {
      const __m512i start = kQ4 ? _mm512_setzero_si512() : _mm512_set1_epi32(x.bias[(row0 + r) * nb + b]);
      for (int j = 0; j < kPanels; ++j) isum[r][j] = start;
    }
    // The weights stream from memory once per batch: asking for the next panel pair's block now
    // keeps loads in flight while the dot products of this one run.
    for (int j = 0; j < kPanels; ++j) {
      const char* next = reinterpret_cast<const char*>(w.Quants(p0 + j, b)) + kPanels * w.panel_bytes;
      for (int line = 0; line < QuantBytes(w.type); line += 64) _mm_prefetch(next + line, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(w.Scales(p0 + j, b)) + kPanels * w.panel_bytes, _MM_HINT_T0);
    }
    if constexpr (kQ4) {
      for (int c = 0; c < 4; ++c) {
        __m512i lo[kPanels], hi[kPanels];
        for (int j = 0; j < kPanels; ++j) {
          const __m512i raw = _mm512_load_si512(w.Quants(p0 + j, b) + c * 64);
          lo[j] = _mm512_and_si512(raw, low_nibbles);
          hi[j] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low_nibbles);
        }
        for (int r = 0; r < kRows; ++r) {
          const __m512i xl = Broadcast4(xq[r] + 4 * c), xh = Broadcast4(xq[r] + 16 + 4 * c);
          for (int j = 0; j < kPanels; ++j) {
            isum[r][j] = _mm512_dpbusd_epi32(isum[r][j], lo[j], xl);
            isum[r][j] = _mm512_dpbusd_epi32(isum[r][j], hi[j], xh);
          }
        }
      }
    } else {
      for (int g = 0; g < 8; ++g) {
        __m512i q[kPanels];
        for (int j = 0; j < kPanels; ++j) q[j] = _mm512_load_si512(w.Quants(p0 + j, b) + g * 64);
        for (int r = 0; r < kRows; ++r) {
          const __m512i xb = Broadcast4(xq[r] + 4 * g);
          for (int j = 0; j < kPanels; ++j) isum[r][j] = _mm512_dpbusd_epi32(isum[r][j], q[j], xb);
        }
      }
    }
    __m512 dw[kPanels], mw[kPanels];
    for (int j = 0; j < kPanels; ++j) {
      const uint8_t* s = w.Scales(p0 + j, b);
      dw[j] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
      if constexpr (kQ4) mw[j] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32)));
    }
    for (int r = 0; r < kRows; ++r) {
      const __m512 dx = _mm512_set1_ps(x.d[(row0 + r) * nb + b]);
      const __m512 dsum = _mm512_set1_ps(x.dsum[(row0 + r) * nb + b]);
      for (int j = 0; j < kPanels; ++j) {
        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][j]), _mm512_mul_ps(dw[j], dx), acc[r][j]);
        if constexpr (kQ4) acc[r][j] = _mm512_fmadd_ps(mw[j], dsum, acc[r][j]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int j = 0; j < kPanels; ++j) _mm512_mask_storeu_ps(y + r * ldy + j * kQuantPanel, mask[j], acc[r][j]);
  }
}

using TileFn = void (*)(const QuantizedActivations&, int, int, int, const PanelView&, int, float*, int, bool, int);
constexpr int kTileRows = 4;
constexpr int kTilePanels = 2;
// A tile of a few rows keeps its weights in registers; a longer batch walks the
// inputs in chunks of blocks that stay in L1 while every row tile passes over
// them.
constexpr int kBlockChunk = 8;

template <bool kQ4>
constexpr TileFn kTiles[kTileRows][kTilePanels] = {
    {Tile<1, 1, kQ4>, Tile<1, 2, kQ4>},
    {Tile<2, 1, kQ4>, Tile<2, 2, kQ4>},
    {Tile<3, 1, kQ4>, Tile<3, 2, kQ4>},
    {Tile<4, 1, kQ4>, Tile<4, 2, kQ4>},
};

void VnniLinearPanels(const QuantizedActivations& x, const PanelView& w, int out, int p_begin, int p_end, float* y,
                      int ldy, bool accumulate) {
  const bool q4 = IsQ4(w.type);
  const int chunk = x.rows <= kTileRows ? x.blocks : kBlockChunk;
  for (int pg = p_begin; pg < p_end; pg += kTilePanels) {
    const int panels = std::min(kTilePanels, p_end - pg);
    const int cols = std::min(panels * kQuantPanel, out - pg * kQuantPanel);
    for (int b0 = 0; b0 < x.blocks; b0 += chunk) {
      const int b1 = std::min(x.blocks, b0 + chunk);
      for (int r = 0; r < x.rows; r += kTileRows) {
        const int rows = std::min(kTileRows, x.rows - r);
        const TileFn fn = q4 ? kTiles<true>[rows - 1][panels - 1] : kTiles<false>[rows - 1][panels - 1];
        fn(x, r, b0, b1, w, pg, y + static_cast<size_t>(r) * ldy + pg * kQuantPanel, ldy, accumulate || b0 > 0, cols);
      }
    }
  }
}

#endif  // MEDUSA_VNNI

// One output of one row, blocks [0, blocks): QuantizedLinearReference's inner
// loop.
float ReferenceDot(const QuantizedActivations& x, int r, const PanelView& w, int o, float acc) {
  const int p = o / kQuantPanel, lane = o % kQuantPanel;
  const int8_t* xq = reinterpret_cast<const int8_t*>(x.q.data()) + static_cast<size_t>(r) * x.blocks * kQuantBlock;
  for (int b = 0; b < w.blocks; ++b) {
    int32_t isum = 0;
    for (int k = 0; k < kQuantBlock; ++k) isum += QuantAt(w.type, w.Quants(p, b), lane, k) * xq[b * kQuantBlock + k];
    const float dw = HalfToFloat(LoadU16(w.Scales(p, b) + 2 * lane));
    acc = std::fma(static_cast<float>(isum), dw * x.d[r * x.blocks + b], acc);
    if (IsQ4(w.type)) {
      const float mw = HalfToFloat(LoadU16(w.Scales(p, b) + 32 + 2 * lane));
      acc = std::fma(mw, x.dsum[r * x.blocks + b], acc);
    }
  }
  return acc;
}

void ReferenceLinearPanels(const QuantizedActivations& x, const PanelView& w, int out, int p_begin, int p_end, float* y,
                           int ldy, bool accumulate) {
  const int o_end = std::min(out, p_end * kQuantPanel);
  for (int r = 0; r < x.rows; ++r) {
    for (int o = p_begin * kQuantPanel; o < o_end; ++o) {
      float* dst = y + static_cast<size_t>(r) * ldy + o;
      *dst = ReferenceDot(x, r, w, o, accumulate ? *dst : 0.0f);
    }
  }
}

}  // namespace

namespace {

// One block of 32 activations: q = round-to-even(x / d), d = max|x| / 127 (NaN values count as
// 0 and quantize to 0). Returns the sum of q. The AVX-512 and plain versions agree bit for bit.
int32_t QuantizeBlock(const float* v, int8_t* q, float* d_out) {
#if defined(MEDUSA_VNNI)
  const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
  const __mmask16 ok0 = _mm512_cmp_ps_mask(v0, v0, _CMP_ORD_Q), ok1 = _mm512_cmp_ps_mask(v1, v1, _CMP_ORD_Q);
  const __m512 a =
      _mm512_max_ps(_mm512_maskz_mov_ps(ok0, _mm512_abs_ps(v0)), _mm512_maskz_mov_ps(ok1, _mm512_abs_ps(v1)));
  const float d = _mm512_reduce_max_ps(a) / 127.0f;
  const __m512 id = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
  auto quantize = [&](__m512 x) {
    __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 ok = _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q);
    r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_maskz_cvtps_epi32(ok, r);
  };
  const __m512i q0 = quantize(v0), q1 = quantize(v1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q0));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q1));
  *d_out = d;
  return _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
#else
  float amax = 0.0f;
  for (int k = 0; k < kQuantBlock; ++k) {
    if (!std::isnan(v[k])) amax = std::max(amax, std::fabs(v[k]));
  }
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  int32_t sum = 0;
  for (int k = 0; k < kQuantBlock; ++k) {
    const float r = std::nearbyint(v[k] * id);
    q[k] = std::isnan(r) ? 0 : static_cast<int8_t>(std::clamp(r, -127.0f, 127.0f));
    sum += q[k];
  }
  *d_out = d;
  return sum;
#endif
}

}  // namespace

void QuantizeActivations(const float* x, int rows, int ldx, int in, QuantizedActivations* out) {
  const int nb = in / kQuantBlock;
  out->rows = rows;
  out->blocks = nb;
  // Whole 16-row tiles of activations may be read (quantized_amx.h); the rows past `rows` are ignored.
  out->q.resize(static_cast<size_t>((rows + 15) / 16 * 16) * in);
  out->d.resize(static_cast<size_t>(rows) * nb);
  out->dsum.resize(static_cast<size_t>(rows) * nb);
  out->bias.resize(static_cast<size_t>(rows) * nb);
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < nb; ++b) {
      int8_t* q = reinterpret_cast<int8_t*>(out->q.data()) + static_cast<size_t>(r) * in + b * kQuantBlock;
      float d;
      const int32_t sum = QuantizeBlock(x + static_cast<size_t>(r) * ldx + b * kQuantBlock, q, &d);
      out->d[r * nb + b] = d;
      out->dsum[r * nb + b] = d * static_cast<float>(sum);
      out->bias[r * nb + b] = -128 * sum;
    }
  }
}

size_t QuantizedPanelBytes(WeightType type, int out, int in) {
  return static_cast<size_t>((out + kQuantPanel - 1) / kQuantPanel) * PanelBytes(type, in);
}

void PackQuantizedPanels(WeightType type, const uint8_t* rows, int out, int in, uint8_t* panels) {
  const int nb = in / kQuantBlock;
  const PanelView w{type, panels, nb, PanelBytes(type, in)};
  std::memset(panels, 0, QuantizedPanelBytes(type, out, in));
  const size_t row_bytes = RowBytes(type, in);
  const int block_bytes = BlockBytes(type);
  for (int o = 0; o < out; ++o) {
    const int p = o / kQuantPanel, lane = o % kQuantPanel;
    for (int b = 0; b < nb; ++b) {
      const uint8_t* src = rows + o * row_bytes + static_cast<size_t>(b) * block_bytes;
      uint8_t* quants = const_cast<uint8_t*>(w.Quants(p, b));
      uint8_t* scales = const_cast<uint8_t*>(w.Scales(p, b));
      const uint16_t d = LoadU16(src);
      StoreU16(scales + 2 * lane, d);
      if (type == WeightType::kQ8_0) {
        for (int k = 0; k < kQuantBlock; ++k) quants[(k / 4) * 64 + lane * 4 + k % 4] = src[2 + k] ^ 0x80;
        continue;
      }
      const uint8_t* nibbles = src + (type == WeightType::kQ4_1 ? 4 : 2);
      const uint16_t m = type == WeightType::kQ4_1 ? LoadU16(src + 2) : FloatToHalf(-8.0f * HalfToFloat(d));
      StoreU16(scales + 32 + 2 * lane, m);
      for (int k = 0; k < 16; ++k) quants[(k / 4) * 64 + lane * 4 + k % 4] = nibbles[k];
    }
  }
}

void UnpackQuantizedRow(WeightType type, const uint8_t* panels, int /*out*/, int in, int o, uint8_t* row) {
  const int nb = in / kQuantBlock;
  const PanelView w{type, panels, nb, PanelBytes(type, in)};
  const int p = o / kQuantPanel, lane = o % kQuantPanel;
  const int block_bytes = BlockBytes(type);
  for (int b = 0; b < nb; ++b) {
    uint8_t* dst = row + static_cast<size_t>(b) * block_bytes;
    const uint8_t* quants = w.Quants(p, b);
    const uint8_t* scales = w.Scales(p, b);
    StoreU16(dst, LoadU16(scales + 2 * lane));
    if (type == WeightType::kQ8_0) {
      for (int k = 0; k < kQuantBlock; ++k) dst[2 + k] = quants[(k / 4) * 64 + lane * 4 + k % 4] ^ 0x80;
      continue;
    }
    uint8_t* nibbles = dst + (type == WeightType::kQ4_1 ? 4 : 2);
    if (type == WeightType::kQ4_1) StoreU16(dst + 2, LoadU16(scales + 32 + 2 * lane));
    for (int k = 0; k < 16; ++k) nibbles[k] = quants[(k / 4) * 64 + lane * 4 + k % 4];
  }
}

void QuantizedLinearPanels(const QuantizedActivations& x, WeightType type, const uint8_t* panels, int out, int in,
                           int p_begin, int p_end, float* y, int ldy, bool accumulate) {
  const PanelView w{type, panels, in / kQuantBlock, PanelBytes(type, in)};
#if defined(MEDUSA_VNNI)
  if (x.rows >= kAmxMinRows && AmxEnabled()) return AmxLinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
  VnniLinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
#else
  ReferenceLinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
#endif
}

void QuantizedLinearReference(const QuantizedActivations& x, WeightType type, const uint8_t* panels, int out, int in,
                              float* y, int ldy, bool accumulate) {
  const PanelView w{type, panels, in / kQuantBlock, PanelBytes(type, in)};
  ReferenceLinearPanels(x, w, out, 0, (out + kQuantPanel - 1) / kQuantPanel, y, ldy, accumulate);
}

const char* QuantizedKernelName() {
#if defined(MEDUSA_VNNI)
  return AmxEnabled() ? "avx512-vnni, amx-int8 for 6+ rows" : "avx512-vnni";
#else
  return "portable";
#endif
}

}  // namespace medusa::kernels::cpu
