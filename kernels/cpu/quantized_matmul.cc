#include "kernels/cpu/quantized_matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "kernels/cpu/quantized_amx.h"
#include "kernels/cpu/quantized_panels.h"
#include "kernels/math/simd.h"  // <immintrin.h>, with GCC 12's false warnings silenced

// The VNNI kernel is compiled wherever the build targets AVX-512 (x86-64-v4, or -march=native on
// an AVX-512 machine) and chosen at run time when the processor has AVX-512 VNNI, so an image
// built for x86-64-v4 uses it on our machines and still runs on AVX-512 processors without it.
// The AVX2 kernel (x86-64-v3 and up) serves those and AVX2-only processors.
#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__)
#define MEDUSA_VNNI_BUILD 1
#define MEDUSA_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
#endif
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define MEDUSA_AVX2_BUILD 1
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

#if defined(MEDUSA_VNNI_BUILD)

MEDUSA_VNNI_TARGET inline __m512i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// Y tile [kRows][kPanels * 16] (+)= blocks [b0, b1) of rows row0.. of `x` times
// panels p0... The float operations per output are QuantizedLinearReference's,
// in its order.
template <int kRows, int kPanels, bool kQ4>
MEDUSA_VNNI_TARGET void Tile(const QuantizedActivations& x, int row0, int b0, int b1, const PanelView& w, int p0,
                             float* y, int ldy, bool load_y, int cols) {
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

MEDUSA_VNNI_TARGET void VnniLinearPanels(const QuantizedActivations& x, const PanelView& w, int out, int p_begin,
                                         int p_end, float* y, int ldy, bool accumulate) {
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

#endif  // MEDUSA_VNNI_BUILD

#if defined(MEDUSA_AVX2_BUILD)

inline __m256i Broadcast4x8(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm256_set1_epi32(v);
}

// Lanes [8h, 8h + 8) of a panel that exist, as an AVX2 load/store mask (0: none).
inline int HalfLanes(int cols, int h) { return std::clamp(cols - 8 * h, 0, 8); }
inline __m256i HalfMask(int lanes) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Y [kRows][16] (+)= rows row0.. of `x` times panel p, on AVX2: `vpmaddubsw` multiplies unsigned
// by signed bytes into 16-bit pair sums, `vpmaddwd` adds those into 32-bit lanes. Q4 weights
// (0..15) times activations (|q| <= 127) keep a pair sum within 16 bits; Q8 weights are signed,
// so they multiply as |w| times the activation with w's sign (a pair sum at most 2 * 128 * 127).
// Each block's integer sum is exact, and the float operations are the reference's in its order:
// the VNNI kernel's results, bit for bit.
template <int kRows, bool kQ4>
void Avx2Tile(const QuantizedActivations& x, int row0, const PanelView& w, int p, float* y, int ldy, bool load_y,
              int cols) {
  const int nb = x.blocks, in = nb * kQuantBlock;
  const int lanes[2] = {HalfLanes(cols, 0), HalfLanes(cols, 1)};
  const __m256i mask[2] = {HalfMask(lanes[0]), HalfMask(lanes[1])};
  __m256 acc[kRows][2];
  for (int r = 0; r < kRows; ++r) {
    for (int h = 0; h < 2; ++h) {
      acc[r][h] = load_y && lanes[h] > 0 ? _mm256_maskload_ps(y + r * ldy + 8 * h, mask[h]) : _mm256_setzero_ps();
    }
  }
  const __m256i ones = _mm256_set1_epi16(1), low_nibbles = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8(-128);
  for (int b = 0; b < nb; ++b) {
    const uint8_t* quants = w.Quants(p, b);
    for (int line = 0; line < QuantBytes(w.type); line += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(quants) + w.panel_bytes + line, _MM_HINT_T0);
    }
    const int8_t* xq[kRows];
    for (int r = 0; r < kRows; ++r) {
      xq[r] = reinterpret_cast<const int8_t*>(x.q.data()) + static_cast<size_t>(row0 + r) * in + b * kQuantBlock;
    }
    __m256i isum[kRows][2];
    for (int r = 0; r < kRows; ++r) isum[r][0] = isum[r][1] = _mm256_setzero_si256();
    auto add = [&](__m256i& sum, __m256i unsigned_w, __m256i signed_x) {
      sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned_w, signed_x), ones));
    };
    if constexpr (kQ4) {
      for (int c = 0; c < 4; ++c) {
        for (int h = 0; h < 2; ++h) {
          const __m256i raw = _mm256_load_si256(reinterpret_cast<const __m256i*>(quants + c * 64 + h * 32));
          const __m256i lo = _mm256_and_si256(raw, low_nibbles);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low_nibbles);
          for (int r = 0; r < kRows; ++r) {
            add(isum[r][h], lo, Broadcast4x8(xq[r] + 4 * c));
            add(isum[r][h], hi, Broadcast4x8(xq[r] + 16 + 4 * c));
          }
        }
      }
    } else {
      for (int g = 0; g < 8; ++g) {
        for (int h = 0; h < 2; ++h) {
          const __m256i stored = _mm256_load_si256(reinterpret_cast<const __m256i*>(quants + g * 64 + h * 32));
          const __m256i signed_w = _mm256_xor_si256(stored, flip);  // panels keep Q8 as w + 128
          const __m256i magnitude = _mm256_abs_epi8(signed_w);
          for (int r = 0; r < kRows; ++r)
            add(isum[r][h], magnitude, _mm256_sign_epi8(Broadcast4x8(xq[r] + 4 * g), signed_w));
        }
      }
    }
    const uint8_t* scales = w.Scales(p, b);
    for (int h = 0; h < 2; ++h) {
      const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 16 * h)));
      const __m256 mw = kQ4 ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 32 + 16 * h)))
                            : _mm256_setzero_ps();
      for (int r = 0; r < kRows; ++r) {
        const __m256 dx = _mm256_set1_ps(x.d[(row0 + r) * nb + b]);
        acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][h]), _mm256_mul_ps(dw, dx), acc[r][h]);
        if constexpr (kQ4) acc[r][h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.dsum[(row0 + r) * nb + b]), acc[r][h]);
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int h = 0; h < 2; ++h) {
      if (lanes[h] > 0) _mm256_maskstore_ps(y + r * ldy + 8 * h, mask[h], acc[r][h]);
    }
  }
}

void Avx2LinearPanels(const QuantizedActivations& x, const PanelView& w, int out, int p_begin, int p_end, float* y,
                      int ldy, bool accumulate) {
  const bool q4 = IsQ4(w.type);
  for (int p = p_begin; p < p_end; ++p) {
    const int cols = std::min(kQuantPanel, out - p * kQuantPanel);
    float* yp = y + p * kQuantPanel;
    int r = 0;
    for (; r + 2 <= x.rows; r += 2) {
      (q4 ? Avx2Tile<2, true> : Avx2Tile<2, false>)(x, r, w, p, yp + static_cast<size_t>(r) * ldy, ldy, accumulate,
                                                    cols);
    }
    if (r < x.rows) {
      (q4 ? Avx2Tile<1, true> : Avx2Tile<1, false>)(x, r, w, p, yp + static_cast<size_t>(r) * ldy, ldy, accumulate,
                                                    cols);
    }
  }
}

#endif  // MEDUSA_AVX2_BUILD

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
#if defined(MEDUSA_VNNI_BUILD)
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

std::vector<QuantizedKernel> AvailableQuantizedKernels() {
  std::vector<QuantizedKernel> kernels;
#if defined(MEDUSA_VNNI_BUILD)
  if (__builtin_cpu_supports("avx512vnni")) kernels.push_back(QuantizedKernel::kVnni);
#endif
#if defined(MEDUSA_AVX2_BUILD)
  kernels.push_back(QuantizedKernel::kAvx2);
#endif
  kernels.push_back(QuantizedKernel::kReference);
  return kernels;
}

namespace {
std::atomic<QuantizedKernel>& ActiveKernel() {
  static std::atomic<QuantizedKernel> active{AvailableQuantizedKernels().front()};
  return active;
}
}  // namespace

QuantizedKernel ActiveQuantizedKernel() { return ActiveKernel().load(std::memory_order_relaxed); }

bool SetQuantizedKernel(QuantizedKernel kernel) {
  const std::vector<QuantizedKernel> available = AvailableQuantizedKernels();
  if (std::find(available.begin(), available.end(), kernel) == available.end()) return false;
  ActiveKernel().store(kernel, std::memory_order_relaxed);
  return true;
}

void QuantizedLinearPanels(const QuantizedActivations& x, WeightType type, const uint8_t* panels, int out, int in,
                           int p_begin, int p_end, float* y, int ldy, bool accumulate) {
  const PanelView w{type, panels, in / kQuantBlock, PanelBytes(type, in)};
  switch (ActiveQuantizedKernel()) {
#if defined(MEDUSA_VNNI_BUILD)
    case QuantizedKernel::kVnni:
      if (x.rows >= kAmxMinRows && AmxEnabled()) return AmxLinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
      return VnniLinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
#endif
#if defined(MEDUSA_AVX2_BUILD)
    case QuantizedKernel::kAvx2:
      return Avx2LinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
#endif
    default:
      return ReferenceLinearPanels(x, w, out, p_begin, p_end, y, ldy, accumulate);
  }
}

void QuantizedLinearReference(const QuantizedActivations& x, WeightType type, const uint8_t* panels, int out, int in,
                              float* y, int ldy, bool accumulate) {
  const PanelView w{type, panels, in / kQuantBlock, PanelBytes(type, in)};
  ReferenceLinearPanels(x, w, out, 0, (out + kQuantPanel - 1) / kQuantPanel, y, ldy, accumulate);
}

const char* QuantizedKernelName() {
  switch (ActiveQuantizedKernel()) {
    case QuantizedKernel::kVnni:
      return AmxEnabled() ? "avx512-vnni, amx-int8 for 6+ rows" : "avx512-vnni";
    case QuantizedKernel::kAvx2:
      return "avx2";
    case QuantizedKernel::kReference:
      break;
  }
  return "portable";
}

}  // namespace medusa::kernels::cpu
