// The CUDA backend's host-side fp16 and bfloat16 conversions against NumPy and ml_dtypes
// (tests/reference/make_half_fixtures.py): every rounding case bit for bit, NaN kept NaN.

#include <bit>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/half_precision.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_models.h"

namespace medusa::kernels::cuda {
namespace {

const nlohmann::json& Fixture() {
  static const nlohmann::json* fixture = [] {
    std::ifstream in(testing::SourcePath("tests/fixtures/half_conversions.json"));
    std::stringstream text;
    text << in.rdbuf();
    return new nlohmann::json(nlohmann::json::parse(text.str()));
  }();
  return *fixture;
}

bool IsHalfNan(uint16_t bits) { return (bits & 0x7C00u) == 0x7C00u && (bits & 0x3FFu) != 0; }
bool IsBfloat16Nan(uint16_t bits) { return (bits & 0x7F80u) == 0x7F80u && (bits & 0x7Fu) != 0; }

TEST(HalfPrecisionTest, RoundsToSixteenBitsAsNumpyAndMlDtypes) {
  const nlohmann::json& cases = Fixture()["to_half"];
  ASSERT_GT(cases.size(), 1000u);
  for (const nlohmann::json& c : cases) {
    const uint32_t bits = c["f32"].get<uint32_t>();
    const float value = std::bit_cast<float>(bits);
    const uint16_t f16 = c["f16"].get<uint16_t>(), bf16 = c["bf16"].get<uint16_t>();
    if (std::isnan(value)) {
      EXPECT_TRUE(IsHalfNan(FloatToHalf(value))) << std::hex << bits;
      EXPECT_TRUE(IsBfloat16Nan(FloatToBfloat16(value))) << std::hex << bits;
      continue;
    }
    EXPECT_EQ(FloatToHalf(value), f16) << "float bits 0x" << std::hex << bits << " (" << value << ")";
    EXPECT_EQ(FloatToBfloat16(value), bf16) << "float bits 0x" << std::hex << bits << " (" << value << ")";
  }
}

TEST(HalfPrecisionTest, WidensHalfAsNumpy) {
  for (const nlohmann::json& c : Fixture()["from_half"]) {
    const uint16_t half = c["f16"].get<uint16_t>();
    const float expected = std::bit_cast<float>(c["f32"].get<uint32_t>());
    const float widened = HalfToFloat(half);
    if (IsHalfNan(half)) {
      EXPECT_TRUE(std::isnan(widened)) << std::hex << half;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(widened), std::bit_cast<uint32_t>(expected)) << "half 0x" << std::hex << half;
    }
  }
}

TEST(HalfPrecisionTest, EverySixteenBitValueSurvivesARoundTrip) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    if (!IsHalfNan(h)) {
      EXPECT_EQ(FloatToHalf(HalfToFloat(h)), h) << std::hex << bits;
    }
    if (!IsBfloat16Nan(h)) {
      EXPECT_EQ(FloatToBfloat16(Bfloat16ToFloat(h)), h) << std::hex << bits;
    }
  }
}

TEST(HalfPrecisionTest, ConvertsSpansBothWays) {
  const std::vector<float> values = {0.0f, -1.5f, 3.14159f, 65504.0f, 1e-6f, -2.5e38f};
  for (WeightType type : {WeightType::kFloat32, WeightType::kFloat16, WeightType::kBfloat16}) {
    std::vector<uint8_t> stored(values.size() * TypeBytes(type));
    ConvertFloats(values, type, stored.data());
    std::vector<float> back(values.size());
    ConvertToFloats(stored.data(), type, absl::MakeSpan(back));
    for (size_t i = 0; i < values.size(); ++i) {
      const float expected = type == WeightType::kFloat32   ? values[i]
                             : type == WeightType::kFloat16 ? HalfToFloat(FloatToHalf(values[i]))
                                                            : Bfloat16ToFloat(FloatToBfloat16(values[i]));
      EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(expected))
          << WeightTypeName(type) << " value " << values[i];
    }
  }
  EXPECT_EQ(TypeBytes(WeightType::kFloat32), 4);
  EXPECT_EQ(TypeBytes(WeightType::kBfloat16), 2);
}

}  // namespace
}  // namespace medusa::kernels::cuda
