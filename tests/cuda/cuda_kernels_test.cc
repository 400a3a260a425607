// The CUDA kernels one by one on a GPU, against float64 code written here and against the
// CPU's selection rule (kernels/topk.h): the batch-invariant GEMM in every weight type (its
// error, and the same bits for a row whatever rows share the launch), the device argmax and
// top-k (exactly the CPU's choice, ties and NaN included), RMSNorm and SwiGLU. Skips, with the
// driver's reason, where no GPU is visible.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/half_precision.h"
#include "kernels/cuda/layer_kernels.h"
#include "kernels/cuda/selection_kernels.h"
#include "kernels/topk.h"

namespace medusa::kernels::cuda {
namespace {

// This binary links the CUDA runtime itself, so it asks the runtime directly (not
// CreateBackend, which would load a second copy in the plugin).
std::string NoGpuReason() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) return std::string(cudaGetErrorName(error)) + ": " + cudaGetErrorString(error);
  return count == 0 ? "no GPU is visible" : "";
}

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = NoGpuReason();
    if (!reason.empty()) GTEST_SKIP() << "needs a GPU: " << reason;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    for (void* p : allocations_) cudaFree(p);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // A device copy of `bytes` bytes at `host` (freed after the test).
  void* Upload(const void* host, size_t bytes) {
    void* device = Allocate(bytes);
    EXPECT_EQ(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return device;
  }
  template <typename T>
  T* Upload(const std::vector<T>& host) {
    return static_cast<T*>(Upload(host.data(), std::max<size_t>(1, host.size()) * sizeof(T)));
  }
  void* Allocate(size_t bytes) {
    void* device = nullptr;
    EXPECT_EQ(cudaMalloc(&device, bytes), cudaSuccess);
    allocations_.push_back(device);
    return device;
  }
  template <typename T>
  std::vector<T> Download(const T* device, size_t n) {
    std::vector<T> host(n);
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
  // A RowCount of `count` rows for a launch covering `max`.
  RowCount Rows(int count, int max) { return RowCount{Upload(std::vector<int32_t>{count}), max}; }

  cudaStream_t stream_ = nullptr;
  std::vector<void*> allocations_;
};

std::vector<float> Uniform(std::mt19937* rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(*rng);
  return v;
}

// Values as stored in `type` (the products' true inputs).
std::vector<float> Rounded(const std::vector<float>& values, WeightType type) {
  if (type == WeightType::kFloat32) return values;
  std::vector<uint16_t> bits(values.size());
  ConvertFloats(values, type, bits.data());
  std::vector<float> out(values.size());
  ConvertToFloats(bits.data(), type, absl::MakeSpan(out));
  return out;
}

struct GemmShape {
  int out, in;
};

class CudaGemm : public CudaKernels, public ::testing::WithParamInterface<std::tuple<WeightType, GemmShape>> {};

// Each output within fp32 accumulation error of the float64 product of the stored weights
// and (tensor cores) the rounded inputs; `accumulate` adds to what y held.
TEST_P(CudaGemm, MatchesFloat64OfTheStoredValues) {
  const auto [type, shape] = GetParam();
  const int rows = 64;
  std::mt19937 rng(1);
  const std::vector<float> w = Uniform(&rng, static_cast<size_t>(shape.out) * shape.in, -1.0f, 1.0f);
  const std::vector<float> x = Uniform(&rng, static_cast<size_t>(rows) * shape.in, -2.0f, 2.0f);
  const std::vector<float> y0 = Uniform(&rng, static_cast<size_t>(rows) * shape.out, -1.0f, 1.0f);
  std::vector<uint8_t> stored(w.size() * TypeBytes(type));
  if (type == WeightType::kFloat32) {
    std::memcpy(stored.data(), w.data(), stored.size());
  } else {
    ConvertFloats(w, type, stored.data());
  }
  const std::vector<float> wr = Rounded(w, type);
  const std::vector<float> xr = UsesTensorCores(type, shape.in) ? Rounded(x, type) : x;
  void* dw = Upload(stored.data(), stored.size());
  float* dx = Upload(x);
  void* x16 = Allocate(static_cast<size_t>(rows) * shape.in * 2);
  // fp32 accumulation error grows like sqrt(in) roundings of the products' magnitude; tensor
  // cores may align addends by truncation, so their bound is looser (a wrong index or a lost
  // tile is off by O(magnitude) either way).
  const double tolerance = (UsesTensorCores(type, shape.in) ? 64.0 : 8.0) * std::sqrt(shape.in) * std::ldexp(1.0, -24);
  for (bool accumulate : {false, true}) {
    float* dy = Upload(y0);
    LaunchInvariantGemm(dx, Rows(rows, rows), shape.in, dw, type, shape.out, shape.in, dy, shape.out, accumulate, x16,
                        stream_);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const std::vector<float> y = Download(dy, y0.size());
    for (int r = 0; r < rows; ++r) {
      for (int o = 0; o < shape.out; ++o) {
        double sum = accumulate ? y0[r * shape.out + o] : 0.0, magnitude = std::abs(sum);
        for (int i = 0; i < shape.in; ++i) {
          const double p = static_cast<double>(xr[r * shape.in + i]) * wr[o * shape.in + i];
          sum += p;
          magnitude += std::abs(p);
        }
        ASSERT_LE(std::abs(y[r * shape.out + o] - sum), tolerance * magnitude + 1e-30)
            << WeightTypeName(type) << " row " << r << " output " << o;
      }
    }
  }
}

// A row's outputs carry the same bits alone and among 64 rows; rows past the device count are
// left alone (a graph launched for more rows than a step has).
TEST_P(CudaGemm, RowsGetTheSameBitsWhateverTheirNeighbours) {
  const auto [type, shape] = GetParam();
  const int rows = 64;
  std::mt19937 rng(2);
  const std::vector<float> w = Uniform(&rng, static_cast<size_t>(shape.out) * shape.in, -1.0f, 1.0f);
  const std::vector<float> x = Uniform(&rng, static_cast<size_t>(rows) * shape.in, -2.0f, 2.0f);
  std::vector<uint8_t> stored(w.size() * TypeBytes(type));
  if (type == WeightType::kFloat32) {
    std::memcpy(stored.data(), w.data(), stored.size());
  } else {
    ConvertFloats(w, type, stored.data());
  }
  void* dw = Upload(stored.data(), stored.size());
  float* dx = Upload(x);
  void* x16 = Allocate(static_cast<size_t>(rows) * shape.in * 2);
  float* all = static_cast<float*>(Allocate(static_cast<size_t>(rows) * shape.out * sizeof(float)));
  LaunchInvariantGemm(dx, Rows(rows, rows), shape.in, dw, type, shape.out, shape.in, all, shape.out, false, x16,
                      stream_);
  const std::vector<float> together = Download(all, static_cast<size_t>(rows) * shape.out);
  for (int r : {0, 1, 17, 31, 32, 63}) {
    float* one = static_cast<float*>(Allocate(shape.out * sizeof(float)));
    LaunchInvariantGemm(dx + static_cast<size_t>(r) * shape.in, Rows(1, 1), shape.in, dw, type, shape.out, shape.in,
                        one, shape.out, false, x16, stream_);
    const std::vector<float> alone = Download(one, shape.out);
    EXPECT_EQ(std::memcmp(alone.data(), &together[static_cast<size_t>(r) * shape.out], shape.out * sizeof(float)), 0)
        << WeightTypeName(type) << " row " << r;
  }
  // 5 rows counted, a launch for 64: rows 5.. keep their sentinel.
  const std::vector<float> sentinel(static_cast<size_t>(rows) * shape.out, 12345.0f);
  float* partly = Upload(sentinel);
  LaunchInvariantGemm(dx, Rows(5, rows), shape.in, dw, type, shape.out, shape.in, partly, shape.out, false, x16,
                      stream_);
  const std::vector<float> y = Download(partly, sentinel.size());
  EXPECT_EQ(std::memcmp(y.data(), together.data(), 5 * shape.out * sizeof(float)), 0);
  EXPECT_TRUE(std::all_of(y.begin() + 5 * shape.out, y.end(), [](float v) { return v == 12345.0f; }));
}

// Tensor-core sizes (in a multiple of 64; a 7B model's 4096 and 11008), and sizes that take the
// CUDA-core path.
INSTANTIATE_TEST_SUITE_P(
    TypesAndShapes, CudaGemm,
    ::testing::Combine(::testing::Values(WeightType::kFloat32, WeightType::kFloat16, WeightType::kBfloat16),
                       ::testing::Values(GemmShape{96, 256}, GemmShape{40, 4096}, GemmShape{24, 11008},
                                         GemmShape{70, 40}, GemmShape{33, 100})),
    [](const auto& info) {
      const GemmShape s = std::get<1>(info.param);
      return std::string(WeightTypeName(std::get<0>(info.param))) + "_" + std::to_string(s.out) + "x" +
             std::to_string(s.in);
    });

// Rows with ties, NaN, infinities, a row of NaN, and rows where the best sits at either end.
std::vector<float> AwkwardLogits(int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> logits = Uniform(&rng, static_cast<size_t>(rows) * cols, -3.0f, 3.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    float* row = &logits[static_cast<size_t>(r) * cols];
    switch (r % 6) {
      case 0:  // ties for the best, and for places below it
        row[cols / 3] = row[cols / 2] = row[cols - 1] = 9.0f;
        row[7] = row[8] = 8.0f;
        break;
      case 1:  // NaN first and scattered
        for (int i = 0; i < cols; i += 17) row[i] = nan;
        break;
      case 2:
        std::fill(row, row + cols, nan);
        break;
      case 3:
        row[0] = inf;
        row[cols - 1] = -inf;
        break;
      case 4:
        row[cols - 1] = 10.0f;
        break;
      case 5:
        std::fill(row, row + cols, -1.0f);  // every entry tied
        break;
    }
  }
  return logits;
}

TEST_F(CudaKernels, ArgmaxIsTheCpuArgmax) {
  for (int cols : {5, 32, 1000, 49152}) {
    const int rows = 12;
    const std::vector<float> logits = AwkwardLogits(rows, cols, 3);
    const float* dl = Upload(logits);
    int32_t* dout = static_cast<int32_t*>(Allocate(rows * sizeof(int32_t)));
    LaunchArgmaxRows(dl, Rows(rows, rows), cols, dout, stream_);
    const std::vector<int32_t> got = Download(dout, rows);
    for (int r = 0; r < rows; ++r) {
      EXPECT_EQ(got[r], Argmax(absl::MakeConstSpan(logits).subspan(static_cast<size_t>(r) * cols, cols)))
          << cols << " columns, row " << r;
    }
  }
}

TEST_F(CudaKernels, TopKIsTheCpuTopK) {
  const int rows = 6, cols = 3000;
  const std::vector<int32_t> topk = {1, 10, 64, 5, 200}, offset = {0, 1, 11, 75, 80};
  const int segments = static_cast<int>(topk.size()), total = 280;
  const std::vector<float> logits = AwkwardLogits(rows * segments, cols, 4);
  std::vector<int32_t> map(cols);
  for (int i = 0; i < cols; ++i) map[i] = 7 * i + 3;  // a draft vocabulary
  for (bool mapped : {false, true}) {
    int32_t* dout = static_cast<int32_t*>(Allocate(static_cast<size_t>(rows) * total * sizeof(int32_t)));
    LaunchTopKRows(Upload(logits), rows, segments, cols, Upload(topk), Upload(offset), total,
                   mapped ? Upload(map) : nullptr, dout, stream_);
    const std::vector<int32_t> got = Download(dout, static_cast<size_t>(rows) * total);
    TopK selector;
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < segments; ++h) {
        std::vector<int32_t> want(topk[h]);
        selector.Select(absl::MakeConstSpan(logits).subspan((static_cast<size_t>(r) * segments + h) * cols, cols),
                        absl::MakeSpan(want));
        if (mapped) {
          for (int32_t& id : want) id = map[id];
        }
        const std::vector<int32_t> row(got.begin() + r * total + offset[h],
                                       got.begin() + r * total + offset[h] + topk[h]);
        EXPECT_EQ(row, want) << "row " << r << " head " << h << (mapped ? " (mapped)" : "");
      }
    }
  }
}

TEST_F(CudaKernels, RmsNormAndSwiGluMatchFloat64) {
  const int rows = 9, dim = 576, ld = 640;
  std::mt19937 rng(5);
  const std::vector<float> x = Uniform(&rng, static_cast<size_t>(rows) * ld, -3.0f, 3.0f);
  const std::vector<float> weight = Uniform(&rng, dim, 0.5f, 1.5f);
  float* out = static_cast<float*>(Allocate(static_cast<size_t>(rows) * ld * sizeof(float)));
  LaunchRmsNorm(Upload(x), Upload(weight), Rows(rows, rows), dim, ld, 1e-5f, out, stream_);
  const std::vector<float> normed = Download(out, static_cast<size_t>(rows) * ld);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(x[r * ld + i]) * x[r * ld + i];
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) {
      const double want = x[r * ld + i] * inv * weight[i];
      ASSERT_NEAR(normed[r * ld + i], want, 2e-6 * std::max(1.0, std::abs(want))) << "row " << r << " i " << i;
    }
  }

  const int hidden = 1536;
  const std::vector<float> gate_up = Uniform(&rng, static_cast<size_t>(rows) * 2 * hidden, -8.0f, 8.0f);
  float* act = static_cast<float*>(Allocate(static_cast<size_t>(rows) * hidden * sizeof(float)));
  LaunchSwiGlu(Upload(gate_up), Rows(rows, rows), hidden, act, stream_);
  const std::vector<float> got = Download(act, static_cast<size_t>(rows) * hidden);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < hidden; ++i) {
      const double g = gate_up[r * 2 * hidden + i], u = gate_up[r * 2 * hidden + hidden + i];
      const double want = g / (1.0 + std::exp(-g)) * u;
      ASSERT_NEAR(got[r * hidden + i], want, 2e-6 * std::max(1.0, std::abs(want))) << "row " << r << " i " << i;
    }
  }
}

}  // namespace
}  // namespace medusa::kernels::cuda
