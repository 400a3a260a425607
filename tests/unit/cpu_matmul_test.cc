// The CPU backend's packed products against a plain double-precision loop, over the shapes
// that reach every tile variant: row counts around the 4- and 8-row tiles and the taller 6-
// and 12-row ones, output counts that leave partial panels and partial panel groups, input
// counts across the 128-input chunks, overwrite and accumulate, one and two threads.

#include "kernels/cpu/matmul.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace medusa::kernels::cpu {
namespace {

using math::ThreadPool;

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

struct Case {
  int rows, in, out;
};

TEST(PackedLinear, MatchesPlainProduct) {
  const Case cases[] = {{1, 16, 16},  {1, 576, 960},  {2, 40, 7},    {3, 130, 33},  {7, 64, 48},
                        {8, 129, 49}, {9, 300, 100},  {16, 576, 97}, {17, 257, 80}, {37, 200, 250},
                        {64, 96, 512}, {5, 1, 3},     {12, 1536, 20}, {5, 576, 97}, {6, 130, 50},
                        {10, 200, 70},  {11, 129, 33}};
  ThreadPool one(1), two(2);
  for (const Case& c : cases) {
    const std::vector<float> w = Random(static_cast<size_t>(c.out) * c.in, 1);
    const int ldx = c.in + 3, ldy = c.out + 5;  // strides wider than the rows
    const std::vector<float> x = Random(static_cast<size_t>(c.rows) * ldx, 2);
    const std::vector<float> y0 = Random(static_cast<size_t>(c.rows) * ldy, 3);
    const PackedMatrix packed(w.data(), c.out, c.in);
    ASSERT_EQ(packed.out(), c.out);
    ASSERT_EQ(packed.in(), c.in);
    for (ThreadPool* pool : {&one, &two}) {
      for (bool accumulate : {false, true}) {
        std::vector<float> y = y0;
        Linear(x.data(), c.rows, ldx, packed, y.data(), ldy, accumulate, pool);
        for (int r = 0; r < c.rows; ++r) {
          for (int o = 0; o < ldy; ++o) {
            const float got = y[static_cast<size_t>(r) * ldy + o];
            if (o >= c.out) {
              ASSERT_EQ(got, y0[static_cast<size_t>(r) * ldy + o]) << "wrote past the row, column " << o;
              continue;
            }
            double want = accumulate ? y0[static_cast<size_t>(r) * ldy + o] : 0.0;
            for (int i = 0; i < c.in; ++i) {
              want += static_cast<double>(x[static_cast<size_t>(r) * ldx + i]) * w[static_cast<size_t>(o) * c.in + i];
            }
            ASSERT_NEAR(got, want, 1e-5 * (1 + std::sqrt(static_cast<double>(c.in))))
                << "rows " << c.rows << " in " << c.in << " out " << c.out << " threads " << pool->size()
                << " accumulate " << accumulate << " at (" << r << ", " << o << ")";
          }
        }
      }
    }
  }
}

// Medusa's losslessness rests on this: a row's outputs are bit-identical whether the row is
// multiplied alone (plain decoding) or with others (a tree), whatever tile shapes the row
// count picks and however the threads split the outputs.
TEST(PackedLinear, RowResultDoesNotDependOnTheBatch) {
  const int in = 300, out = 250, max_rows = 26;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 4);
  const std::vector<float> x = Random(static_cast<size_t>(max_rows) * in, 5);
  const PackedMatrix packed(w.data(), out, in);
  ThreadPool one(1), two(2);
  std::vector<float> alone(static_cast<size_t>(max_rows) * out);
  for (int r = 0; r < max_rows; ++r) {
    Linear(x.data() + static_cast<size_t>(r) * in, 1, in, packed, alone.data() + static_cast<size_t>(r) * out, out,
           false, &one);
  }
  for (int rows = 2; rows <= max_rows; ++rows) {
    for (ThreadPool* pool : {&one, &two}) {
      std::vector<float> y(static_cast<size_t>(rows) * out);
      Linear(x.data(), rows, in, packed, y.data(), out, false, pool);
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_EQ(y[i], alone[i]) << rows << " rows, threads " << pool->size() << ", row " << i / out
                                  << " output " << i % out;
      }
    }
  }
}

TEST(PackedLinear, CopyRowReturnsTheOriginalRow) {
  const int out = 37, in = 21;
  const std::vector<float> w = Random(static_cast<size_t>(out) * in, 4);
  const PackedMatrix packed(w.data(), out, in);
  std::vector<float> row(in);
  for (int o = 0; o < out; ++o) {
    packed.CopyRow(o, row.data());
    for (int i = 0; i < in; ++i) ASSERT_EQ(row[i], w[static_cast<size_t>(o) * in + i]) << o << ", " << i;
  }
}

}  // namespace
}  // namespace medusa::kernels::cpu
