// Choosing a compute device (CreateBackend): auto falls back to the CPU where no GPU is
// visible, a CUDA request there fails with a clear Unavailable, and options a device cannot
// take are InvalidArgument.

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace medusa::kernels {
namespace {

using ::testing::HasSubstr;

BackendOptions Options(const std::string& device, const std::string& weights = "auto") {
  BackendOptions options;
  options.device = device;
  options.weights = weights;
  options.threads = 1;
  return options;
}

TEST(BackendDeviceTest, CudaWithoutAGpuIsUnavailableSayingWhy) {
  if (CudaDeviceVisible()) GTEST_SKIP() << "a GPU is visible here: tests/cuda covers the CUDA backend";
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(Options("cuda"));
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(backend.status().message(), HasSubstr("--device cuda"));
}

TEST(BackendDeviceTest, AutoTakesTheGpuWhenOneIsVisibleElseTheCpu) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(Options("auto"));
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->Name(), CudaDeviceVisible() ? "cuda" : "cpu");
  EXPECT_FALSE((*backend)->MachineId().empty());
}

TEST(BackendDeviceTest, TheCpuTakesEveryWeightModeAndNothingElse) {
  for (const char* weights : {"auto", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"}) {
    EXPECT_TRUE(CreateBackend(Options("cpu", weights)).ok()) << weights;
  }
  for (const char* weights : {"int8", "q4_k", ""}) {
    absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(Options("cpu", weights));
    ASSERT_FALSE(backend.ok()) << weights;
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(backend.status().message(), HasSubstr("--weights"));
  }
}

TEST(BackendDeviceTest, BadCudaOptionsAreRejectedBeforeAnyDeviceIsTouched) {
  BackendOptions options = Options("cuda", "int8");
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(options);
  ASSERT_FALSE(backend.ok());
  // A build without CUDA says so first; one with it names the option.
  if (backend.status().code() == absl::StatusCode::kUnavailable) {
    EXPECT_THAT(backend.status().message(), HasSubstr("no CUDA backend"));
  } else {
    EXPECT_EQ(backend.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(backend.status().message(), HasSubstr("--weights"));
    options = Options("cuda");
    options.gpu_memory_fraction = 1.5;
    backend = CreateBackend(options);
    ASSERT_FALSE(backend.ok());
    EXPECT_THAT(backend.status().message(), HasSubstr("--gpu-memory-fraction"));
  }
}

TEST(BackendDeviceTest, UnknownDevicesAreNotFound) {
  absl::StatusOr<std::unique_ptr<Backend>> backend = CreateBackend(Options("tpu"));
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(backend.status().message(), HasSubstr("cpu, cuda or auto"));
}

}  // namespace
}  // namespace medusa::kernels
