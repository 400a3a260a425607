// The weight quantizers and converters (kernels/model/weight_format.h) against
// gguf-py's reference quantizers (tests/reference/make_quant_fixtures.py) and
// NumPy / ml_dtypes' 16-bit rounding (tests/reference/make_half_fixtures.py),
// bit for bit.

#include "kernels/model/weight_format.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/model/weights.h"
#include "nlohmann/json.hpp"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using ::testing::HasSubstr;

nlohmann::json ReadFixture(const std::string& name) {
  std::ifstream in(testing::SourcePath("tests/fixtures/" + name));
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

std::vector<float> Floats(const nlohmann::json& bits) {
  std::vector<float> out;
  for (const auto& b : bits) out.push_back(std::bit_cast<float>(b.get<uint32_t>()));
  return out;
}

struct Named {
  const char* name;
  WeightType type;
};
constexpr Named kTypes[] = {{"f16", WeightType::kF16},
                            {"bf16", WeightType::kBF16},
                            {"q8_0", WeightType::kQ8_0},
                            {"q4_0", WeightType::kQ4_0},
                            {"q4_1", WeightType::kQ4_1}};

TEST(WeightFormatTest, QuantizesAndDequantizesAsGgufPy) {
  const nlohmann::json fixture = ReadFixture("quant_golden.json");
  ASSERT_GE(fixture["cases"].size(), 7u);
  for (const nlohmann::json& c : fixture["cases"]) {
    const std::vector<float> values = Floats(c["values"]);
    const int64_t n = static_cast<int64_t>(values.size());
    for (const Named& t : kTypes) {
      SCOPED_TRACE(::testing::Message() << t.name << ", " << n << " values, first " << values[0]);
      const std::string want = absl::HexStringToBytes(c[t.name]["bytes"].get<std::string>());
      ASSERT_EQ(RowBytes(t.type, n), want.size());
      std::vector<uint8_t> got(want.size());
      QuantizeRow(t.type, values.data(), n, got.data());
      EXPECT_EQ(std::string(got.begin(), got.end()), want);

      const std::vector<float> expected = Floats(c[t.name]["dequantized"]);
      std::vector<float> back(n);
      DequantizeRow(t.type, reinterpret_cast<const uint8_t*>(want.data()), n, back.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(expected[i])) << "value " << i;
      }
    }
  }
}

TEST(WeightFormatTest, SixteenBitRoundingMatchesNumpy) {
  const nlohmann::json fixture = ReadFixture("half_conversions.json");
  ASSERT_GT(fixture["to_half"].size(), 1000u);
  for (const nlohmann::json& c : fixture["to_half"]) {
    const float value = std::bit_cast<float>(c["f32"].get<uint32_t>());
    const uint16_t f16 = c["f16"].get<uint16_t>(), bf16 = c["bf16"].get<uint16_t>();
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(value))));
      EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(value))));
      continue;
    }
    ASSERT_EQ(FloatToHalf(value), f16) << std::hexfloat << value;
    ASSERT_EQ(FloatToBFloat16(value), bf16) << std::hexfloat << value;
    if (!std::isnan(HalfToFloat(f16))) {
      ASSERT_EQ(FloatToHalf(HalfToFloat(f16)), f16) << "half round trip " << f16;
    }
  }
}

TEST(WeightFormatTest, ModesParseAndChooseATypeEveryRowFits) {
  EXPECT_EQ(*ParseWeightMode("auto"), WeightMode::kAuto);
  EXPECT_EQ(*ParseWeightMode("Q4_1"), WeightMode::kQ4_1);
  EXPECT_EQ(*ParseWeightMode("bf16"), WeightMode::kBF16);
  const absl::StatusOr<WeightMode> bad = ParseWeightMode("q5_k");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("auto, f32, f16, bf16, q8_0, q4_0, q4_1"));

  EXPECT_EQ(ChooseWeightType(WeightMode::kAuto, WeightType::kQ4_1, 576), WeightType::kQ4_1);
  EXPECT_EQ(ChooseWeightType(WeightMode::kAuto, WeightType::kBF16, 172), WeightType::kBF16);
  EXPECT_EQ(ChooseWeightType(WeightMode::kQ8_0, WeightType::kQ4_1, 576), WeightType::kQ8_0);
  // stories260K's hidden size, 172, is no whole number of 32-value blocks:
  // float32 it stays.
  EXPECT_EQ(ChooseWeightType(WeightMode::kQ4_1, WeightType::kF32, 172), WeightType::kF32);
  EXPECT_EQ(ChooseWeightType(WeightMode::kF32, WeightType::kQ8_0, 576), WeightType::kF32);
}

TEST(WeightFormatTest, MatricesConvertBothWaysAndValidateByBytes) {
  ModelConfig config;
  config.dim = 64;
  config.hidden_dim = 96;
  config.n_layers = 1;
  config.n_heads = 4;
  config.n_kv_heads = 2;
  config.head_dim = 16;
  config.vocab_size = 40;
  config.max_seq_len = 32;
  config.tied_classifier = true;
  ASSERT_TRUE(config.Validate().ok());
  auto matrix = [](int64_t rows, int64_t cols) {
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i));
    return WeightMatrix(v);
  };
  ModelWeights w;
  w.token_embedding = matrix(config.vocab_size, config.dim);
  w.final_norm.assign(config.dim, 1.0f);
  w.layers.resize(1);
  LayerWeights& L = w.layers[0];
  L.attn_norm.assign(config.dim, 1.0f);
  L.ffn_norm.assign(config.dim, 1.0f);
  L.wq = matrix(config.q_dim(), config.dim);
  L.wk = matrix(config.kv_dim(), config.dim);
  L.wv = matrix(config.kv_dim(), config.dim);
  L.wo = matrix(config.dim, config.q_dim());
  L.w_gate = matrix(config.hidden_dim, config.dim);
  L.w_up = matrix(config.hidden_dim, config.dim);
  L.w_down = matrix(config.dim, config.hidden_dim);
  const std::vector<float> original = L.w_down.values;

  ConvertWeights(config, WeightMode::kQ4_1, &w);
  ASSERT_TRUE(ValidateWeights(config, w).ok()) << ValidateWeights(config, w);
  EXPECT_EQ(L.w_down.type, WeightType::kQ4_1);
  EXPECT_TRUE(L.w_down.values.empty());
  EXPECT_EQ(L.w_down.bytes.size(), RowBytes(WeightType::kQ4_1, config.hidden_dim) * config.dim);
  const std::vector<float> back = L.w_down.ToFloat(config.dim, config.hidden_dim);
  ASSERT_EQ(back.size(), original.size());
  for (size_t i = 0; i < back.size(); ++i) ASSERT_NEAR(back[i], original[i], 2.0 / 15 / 2 + 1e-3) << i;

  L.w_up.bytes.pop_back();
  const absl::Status truncated = ValidateWeights(config, w);
  EXPECT_THAT(truncated.message(), HasSubstr("layers[0].w_up"));
  EXPECT_THAT(truncated.message(), HasSubstr("q4_1"));
  L.w_up.bytes.push_back(0);

  ConvertWeightsToFloat(config, &w);
  ASSERT_TRUE(ValidateWeights(config, w).ok());
  EXPECT_EQ(L.w_down.type, WeightType::kF32);
  EXPECT_EQ(L.w_down.values, back);
}

}  // namespace
}  // namespace medusa
