// The CPU backend's products on weights kept as Q8_0, Q4_0, Q4_1, bfloat16 and
// f16:
// - the SIMD kernel equals the plain C++ reference (quantized_matmul.h) bit for
// bit, over row
//   counts around the 4-row tiles, partial panels and the 8-block input chunks;
// - a row's result does not depend on the rows beside it or on the threads
// (Medusa's invariant);
// - the result is near the double-precision product of the dequantized weights
// (the activations'
//   8-bit rounding is the only error);
// - 16-bit weights give float32's products on the same values, bit for bit.

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/quantized_amx.h"
#include "kernels/cpu/quantized_matmul.h"
#include "kernels/model/weight_format.h"

namespace medusa::kernels::cpu {
namespace {

using math::ThreadPool;

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

constexpr WeightType kQuantized[] = {WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kQ4_1};

struct Case {
  int rows, in, out;
};
constexpr Case kCases[] = {{1, 32, 16},   {1, 576, 960}, {2, 64, 7},    {3, 96, 33},   {4, 288, 48},   {5, 320, 49},
                           {7, 256, 100}, {8, 576, 97},  {9, 1536, 40}, {17, 512, 80}, {37, 288, 130}, {64, 576, 64}};

// Activations per block of 32: d = max|x| / 127, q = round half to even of x / d, clamped to
// [-127, 127]; NaN counts as 0. Checked against that definition written out here.
TEST(QuantizedActivations, AreRoundedToEvenPerBlockOfThirtyTwo) {
  std::vector<float> x = Random(4 * 96, 11);
  x[3] = std::nanf("");
  x[40] = INFINITY;  // its block: d = inf, every q 0
  for (int k = 64; k < 96; ++k) x[k] = 0.0f;
  for (int k = 96; k < 128; ++k) x[k] = (k - 96) * 0.5f;  // exact ties at x / d = n + 0.5
  x[127] = 127.0f;
  QuantizedActivations q;
  QuantizeActivations(x.data(), 4, 96, 96, &q);
  ASSERT_EQ(q.blocks, 3);
  for (int r = 0; r < 4; ++r) {
    for (int b = 0; b < 3; ++b) {
      const float* v = x.data() + r * 96 + b * 32;
      float amax = 0.0f;
      for (int k = 0; k < 32; ++k) {
        if (!std::isnan(v[k])) amax = std::max(amax, std::fabs(v[k]));
      }
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      int sum = 0;
      for (int k = 0; k < 32; ++k) {
        const float rounded = std::nearbyint(v[k] * id);
        const int want = std::isnan(rounded) ? 0 : static_cast<int>(std::clamp(rounded, -127.0f, 127.0f));
        ASSERT_EQ(reinterpret_cast<const int8_t*>(q.q.data())[r * 96 + b * 32 + k], want) << r << " " << b << " " << k;
        sum += want;
      }
      EXPECT_EQ(std::bit_cast<uint32_t>(q.d[r * 3 + b]), std::bit_cast<uint32_t>(d));
      EXPECT_EQ(q.bias[r * 3 + b], -128 * sum);
      EXPECT_EQ(std::bit_cast<uint32_t>(q.dsum[r * 3 + b]), std::bit_cast<uint32_t>(d * static_cast<float>(sum)));
    }
  }
}

// Runs the rest of a test once per SIMD kernel the processor runs: VNNI alone, VNNI with AMX for
// the products of many rows, and AVX2 (which AVX-512 processors run too, so it is tested here).
struct KernelCase {
  QuantizedKernel kernel;
  bool amx;
  const char* name;
};
constexpr KernelCase kKernelCases[] = {{QuantizedKernel::kVnni, false, "Vnni"},
                                       {QuantizedKernel::kVnni, true, "VnniAndAmx"},
                                       {QuantizedKernel::kAvx2, false, "Avx2"}};

class QuantizedKernels : public ::testing::TestWithParam<KernelCase> {
 protected:
  void SetUp() override {
    if (!SetQuantizedKernel(GetParam().kernel)) GTEST_SKIP() << "this build or processor has no " << GetParam().name;
    if (GetParam().amx && !AmxSupported()) GTEST_SKIP() << "this processor (or kernel) gives no AMX tiles";
    SetAmxEnabled(GetParam().amx);
    std::printf("quantized kernel: %s\n", QuantizedKernelName());
  }
  void TearDown() override {
    SetAmxEnabled(false);
    SetQuantizedKernel(AvailableQuantizedKernels().front());
  }
};
INSTANTIATE_TEST_SUITE_P(EveryKernel, QuantizedKernels, ::testing::ValuesIn(kKernelCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(QuantizedKernelChoice, TheFastestAvailableIsTheDefaultAndOthersCanBeChosen) {
  const std::vector<QuantizedKernel> available = AvailableQuantizedKernels();
  ASSERT_FALSE(available.empty());
  EXPECT_EQ(available.back(), QuantizedKernel::kReference);
  EXPECT_EQ(ActiveQuantizedKernel(), available.front());
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  EXPECT_NE(std::find(available.begin(), available.end(), QuantizedKernel::kAvx2), available.end());
#endif
#if defined(__AVX512VNNI__)
  EXPECT_EQ(available.front(), QuantizedKernel::kVnni) << "a VNNI build on a VNNI processor";
#endif
  ASSERT_TRUE(SetQuantizedKernel(QuantizedKernel::kReference));
  EXPECT_STREQ(QuantizedKernelName(), "portable");
  ASSERT_TRUE(SetQuantizedKernel(available.front()));
}

TEST_P(QuantizedKernels, SimdKernelEqualsTheReferenceBitForBit) {
  ThreadPool one(1), two(2);
  for (WeightType type : kQuantized) {
    for (const Case& c : kCases) {
      SCOPED_TRACE(::testing::Message() << WeightTypeName(type) << " rows " << c.rows << " in " << c.in << " out "
                                        << c.out);
      const std::vector<float> w = Random(static_cast<size_t>(c.out) * c.in, 1, 0.05f);
      const std::vector<uint8_t> stored = QuantizeMatrix(type, w.data(), c.out, c.in);
      const PackedMatrix packed(type, stored.data(), c.out, c.in);
      const int ldx = c.in + 5, ldy = c.out + 3;
      const std::vector<float> x = Random(static_cast<size_t>(c.rows) * ldx, 2);
      const std::vector<float> y0 = Random(static_cast<size_t>(c.rows) * ldy, 3);
      QuantizedActivations xq;
      QuantizeActivations(x.data(), c.rows, ldx, c.in, &xq);
      for (bool accumulate : {false, true}) {
        std::vector<float> want = y0;
        QuantizedLinearReference(xq, type, packed.data(), c.out, c.in, want.data(), ldy, accumulate);
        for (ThreadPool* pool : {&one, &two}) {
          std::vector<float> got = y0;
          Linear(x.data(), c.rows, ldx, packed, got.data(), ldy, accumulate, pool);
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
                << "accumulate " << accumulate << " threads " << pool->size() << " row " << i / ldy << " column "
                << i % ldy;
          }
        }
      }
    }
  }
}

TEST_P(QuantizedKernels, RowResultDoesNotDependOnTheBatch) {
  const int in = 576, out = 200, max_rows = 70;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 4, 0.05f);
  const std::vector<float> x = Random(static_cast<size_t>(max_rows) * in, 5);
  ThreadPool one(1), two(2);
  for (WeightType type : kQuantized) {
    const std::vector<uint8_t> stored = QuantizeMatrix(type, w.data(), out, in);
    const PackedMatrix packed(type, stored.data(), out, in);
    std::vector<float> alone(static_cast<size_t>(max_rows) * out);
    for (int r = 0; r < max_rows; ++r) {
      Linear(x.data() + static_cast<size_t>(r) * in, 1, in, packed, alone.data() + static_cast<size_t>(r) * out, out,
             false, &one);
    }
    for (int rows : {2, 3, 4, 5, 8, 9, 16, 31, 64, 70}) {
      for (ThreadPool* pool : {&one, &two}) {
        std::vector<float> y(static_cast<size_t>(rows) * out);
        Linear(x.data(), rows, in, packed, y.data(), out, false, pool);
        for (size_t i = 0; i < y.size(); ++i) {
          ASSERT_EQ(y[i], alone[i]) << WeightTypeName(type) << ", " << rows << " rows, threads " << pool->size()
                                    << ", row " << i / out << " output " << i % out;
        }
      }
    }
  }
}

// The integer sums at their extremes: Q8_0 quants of -128 (a file may hold them, though quantizers
// write -127..127) and 127, Q4 nibbles of 15, against activations of +-127, where a 16-bit pair
// sum (AVX2's vpmaddubsw) would saturate if the weights were multiplied as stored (w + 128).
TEST_P(QuantizedKernels, ExtremeWeightsAndActivationsStayExact) {
  const int rows = 3, in = 128, out = 20;
  std::vector<float> x(static_cast<size_t>(rows) * in);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i / 3) % 2 == 0 ? 1.0f : -1.0f;  // quantized to +-127
  for (WeightType type : kQuantized) {
    std::vector<uint8_t> stored = QuantizeMatrix(type, Random(static_cast<size_t>(out) * in, 8).data(), out, in);
    const size_t block = BlockBytes(type);
    for (size_t b = 0; b < stored.size() / block; ++b) {
      uint8_t* quants = stored.data() + b * block + (type == WeightType::kQ4_1 ? 4 : 2);
      for (int k = 0; k < (type == WeightType::kQ8_0 ? 32 : 16); ++k) {
        if (type == WeightType::kQ8_0)
          quants[k] = (b + k) % 3 == 0 ? 0x7f : 0x80;  // 127 or -128
        else
          quants[k] = (b + k) % 3 == 0 ? 0x0f : 0xff;
      }
    }
    const PackedMatrix packed(type, stored.data(), out, in);
    QuantizedActivations xq;
    QuantizeActivations(x.data(), rows, in, in, &xq);
    std::vector<float> want(static_cast<size_t>(rows) * out), got(want.size());
    QuantizedLinearReference(xq, type, packed.data(), out, in, want.data(), out, false);
    ThreadPool pool(1);
    Linear(x.data(), rows, in, packed, got.data(), out, false, &pool);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i])) << WeightTypeName(type) << " " << i;
    }
  }
}

TEST(QuantizedLinear, IsCloseToTheProductOfTheDequantizedWeights) {
  const int rows = 3, in = 1536, out = 90;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 6, 0.05f);
  const std::vector<float> x = Random(static_cast<size_t>(rows) * in, 7);
  ThreadPool pool(2);
  for (WeightType type : kQuantized) {
    const std::vector<uint8_t> stored = QuantizeMatrix(type, w.data(), out, in);
    const std::vector<float> dequantized = DequantizeMatrix(type, stored.data(), out, in);
    const PackedMatrix packed(type, stored.data(), out, in);
    std::vector<float> y(static_cast<size_t>(rows) * out);
    Linear(x.data(), rows, in, packed, y.data(), out, false, &pool);
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < out; ++o) {
        double want = 0, magnitude = 0;
        for (int i = 0; i < in; ++i) {
          const double term = static_cast<double>(x[r * in + i]) * dequantized[static_cast<size_t>(o) * in + i];
          want += term;
          magnitude += std::fabs(term);
        }
        // 8-bit activations: each term is off by at most half a step, 1/254 of
        // its block's largest.
        ASSERT_NEAR(y[r * out + o], want, 0.02 * magnitude + 1e-4) << WeightTypeName(type) << " " << r << ", " << o;
      }
    }
  }
}

TEST(QuantizedLinear, StoredRowsComeBackByteForByte) {
  const int out = 37, in = 96;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 8);
  for (WeightType type :
       {WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kQ4_1, WeightType::kBF16, WeightType::kF16}) {
    const std::vector<uint8_t> stored = QuantizeMatrix(type, w.data(), out, in);
    const PackedMatrix packed(type, stored.data(), out, in);
    const size_t row_bytes = RowBytes(type, in);
    std::vector<uint8_t> row(row_bytes);
    std::vector<float> values(in), want(in);
    for (int o = 0; o < out; ++o) {
      packed.CopyStoredRow(o, row.data());
      ASSERT_TRUE(std::equal(row.begin(), row.end(), stored.begin() + o * row_bytes)) << WeightTypeName(type) << o;
      packed.CopyRow(o, values.data());
      DequantizeRow(type, stored.data() + o * row_bytes, in, want.data());
      ASSERT_EQ(values, want) << WeightTypeName(type) << " row " << o;
    }
    const PackedMatrix some = packed.SelectRows({5, 0, 36});
    ASSERT_EQ(some.type(), type);
    ASSERT_EQ(some.out(), 3);
    some.CopyStoredRow(2, row.data());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), stored.begin() + 36 * row_bytes)) << WeightTypeName(type);
  }
}

TEST(SixteenBitLinear, EqualsFloat32OnTheSameValuesBitForBit) {
  ThreadPool two(2);
  for (WeightType type : {WeightType::kBF16, WeightType::kF16}) {
    for (const Case& c : kCases) {
      const std::vector<float> w = Random(static_cast<size_t>(c.out) * c.in, 9, 0.05f);
      const std::vector<uint8_t> stored = QuantizeMatrix(type, w.data(), c.out, c.in);
      const std::vector<float> widened = DequantizeMatrix(type, stored.data(), c.out, c.in);
      const PackedMatrix half(type, stored.data(), c.out, c.in);
      const PackedMatrix full(widened.data(), c.out, c.in);
      const std::vector<float> x = Random(static_cast<size_t>(c.rows) * c.in, 10);
      std::vector<float> a(static_cast<size_t>(c.rows) * c.out), b(a.size());
      Linear(x.data(), c.rows, c.in, half, a.data(), c.out, false, &two);
      Linear(x.data(), c.rows, c.in, full, b.data(), c.out, false, &two);
      ASSERT_EQ(a, b) << WeightTypeName(type) << " rows " << c.rows << " in " << c.in << " out " << c.out;
    }
  }
}

}  // namespace
}  // namespace medusa::kernels::cpu
