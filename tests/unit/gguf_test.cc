// GGUF reader: metadata and dequantization checked against gguf-py (fixtures from
// tests/reference/make_gguf_fixtures.py), and broken files that must give clear errors.

#include "engine/model/gguf.h"

#include <cmath>
#include <cstring>
#include <random>

#include "engine/model/dequant.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/model_test_util.h"

namespace medusa::gguf {
namespace {

using ::medusa::testing_util::Append;
using ::medusa::testing_util::GgufBuilder;
using ::medusa::testing_util::Put;
using ::medusa::testing_util::ReadBytes;
using ::medusa::testing_util::SourcePath;
using ::medusa::testing_util::WriteTemp;
using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::HasSubstr;

const std::string kSyntheticPath = SourcePath("tests/fixtures/gguf_synthetic.gguf");

const nlohmann::json& Expected() {
  static const nlohmann::json* expected = new nlohmann::json(
      nlohmann::json::parse(ReadBytes(SourcePath("tests/fixtures/gguf_synthetic.json"))));
  return *expected;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
uint32_t ToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

std::unique_ptr<File> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? *std::move(file) : nullptr;
}

// Opens bytes written to a temp file; the result must be an error.
absl::Status OpenBroken(const std::string& bytes) {
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("broken.gguf", bytes));
  return file.ok() ? absl::OkStatus() : file.status();
}

// Offset of a metadata value's bytes (after key length, key and type).
size_t ValueOffset(const std::string& key) {
  return Expected()["key_offsets"][key].get<size_t>() + 8 + key.size() + 4;
}
// Offsets of fields of a tensor info.
size_t TensorDimsOffset(const std::string& name) {
  return Expected()["tensor_info_offsets"][name].get<size_t>() + 8 + name.size() + 4;
}
size_t TensorTypeOffset(const std::string& name) {
  return TensorDimsOffset(name) + 8 * Expected()["tensors"][name]["dims"].size();
}
size_t TensorOffsetOffset(const std::string& name) { return TensorTypeOffset(name) + 4; }

// ------------------------------------------------------------------ valid file

TEST(GgufTest, HeaderMatchesGgufPy) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(file->alignment(), 64u);
  std::vector<std::string> order = Expected()["key_order"];
  EXPECT_EQ(file->Keys(), order);
}

TEST(GgufTest, EveryMetadataValueMatchesGgufPy) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  for (const auto& [key, expected] : Expected()["metadata"].items()) {
    SCOPED_TRACE(key);
    ASSERT_TRUE(file->Has(key));
    EXPECT_EQ(ValueTypeName(file->TypeOf(key)), expected["type"].get<std::string>());
    absl::StatusOr<nlohmann::json> value = file->GetJson(key);
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ(*value, expected["value"]) << value->dump();
  }
}

TEST(GgufTest, ScalarGettersConvertAndCheckTypes) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(*file->GetInt("test.uint8"), 200);
  EXPECT_EQ(*file->GetInt("test.int8"), -100);
  EXPECT_EQ(*file->GetInt("test.uint16"), 60000);
  EXPECT_EQ(*file->GetInt("test.int16"), -30000);
  EXPECT_EQ(*file->GetInt("test.uint32"), 4000000000);
  EXPECT_EQ(*file->GetInt("test.int32"), -2000000000);
  EXPECT_EQ(*file->GetInt("test.int64"), -(int64_t{1} << 62) - 7);
  EXPECT_EQ(*file->GetFloat("test.float32"), static_cast<double>(0.1f));
  EXPECT_EQ(*file->GetFloat("test.float64"), 1.0 / 3.0);
  EXPECT_EQ(*file->GetFloat("test.int32"), -2e9);  // integers are numbers too
  EXPECT_TRUE(*file->GetBool("test.bool_true"));
  EXPECT_FALSE(*file->GetBool("test.bool_false"));
  EXPECT_EQ(*file->GetString("test.string"), "h\xc3\xa9llo \xe2\x9c\x93 world");
  EXPECT_EQ(*file->GetString("test.string_empty"), "");
  EXPECT_EQ(*file->GetString("general.architecture"), "synthetic");

  absl::StatusOr<int64_t> too_big = file->GetInt("test.uint64");
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(too_big.status()), AllOf(HasSubstr("test.uint64"), HasSubstr("int64")));

  absl::StatusOr<std::string> wrong_type = file->GetString("test.uint8");
  EXPECT_EQ(wrong_type.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(wrong_type.status()),
              AllOf(HasSubstr("test.uint8"), HasSubstr("uint8"), HasSubstr("string")));
  EXPECT_EQ(file->GetInt("test.float32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->GetBool("test.uint8").status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<int64_t> missing = file->GetInt("no.such.key");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), HasSubstr("no.such.key"));
  EXPECT_FALSE(file->Has("no.such.key"));
}

TEST(GgufTest, ArrayGetters) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(*file->GetStringArray("test.array.string"),
            (std::vector<std::string>{"a", "", "\xc3\xbc", "a longer string"}));
  EXPECT_EQ(*file->GetIntArray("test.array.int16"), (std::vector<int64_t>{-32768, 0, 32767}));
  EXPECT_EQ(*file->GetIntArray("test.array.uint8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(*file->GetIntArray("test.array.int64"), (std::vector<int64_t>{-(int64_t{1} << 40), 5}));
  EXPECT_EQ(
      *file->GetFloatArray("test.array.float32"),
      (std::vector<double>{0.5, -1.25, static_cast<double>(3e10f), static_cast<double>(1e-3f)}));
  EXPECT_EQ(*file->GetFloatArray("test.array.float64"), (std::vector<double>{0.1, -2.5}));
  EXPECT_EQ(*file->GetFloatArray("test.array.int32"), (std::vector<double>{1, -2, 3}));
  EXPECT_EQ(*file->ArrayLength("test.array.nested_int"), 3u);
  EXPECT_EQ(*file->ArrayLength("test.array.string"), 4u);

  absl::StatusOr<std::vector<std::string>> not_strings = file->GetStringArray("test.array.int32");
  EXPECT_EQ(not_strings.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(not_strings.status()),
              AllOf(HasSubstr("test.array.int32"), HasSubstr("int32")));
  EXPECT_EQ(file->GetIntArray("test.array.nested_int").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->GetIntArray("test.array.float32").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->GetStringArray("test.string").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->ArrayLength("missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufTest, TensorInfosMatchGgufPy) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  const std::string bytes = ReadBytes(kSyntheticPath);
  std::vector<std::string> order = Expected()["tensor_order"];
  ASSERT_EQ(file->tensors().size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const nlohmann::json& want = Expected()["tensors"][order[i]];
    const TensorInfo& info = file->tensors()[i];
    SCOPED_TRACE(info.name);
    EXPECT_EQ(info.name, order[i]);
    EXPECT_EQ(info.dims, want["dims"].get<std::vector<int64_t>>());
    EXPECT_EQ(info.type, want["type_id"].get<uint32_t>());
    EXPECT_EQ(GgmlTypeName(info.type),
              want["type"].get<std::string>() + " (" + std::to_string(info.type) + ")");
    EXPECT_EQ(file->FindTensor(info.name), &info);
    // Raw bytes start where gguf-py says the data is.
    absl::StatusOr<const uint8_t*> data = file->TensorData(info);
    ASSERT_TRUE(data.ok()) << data.status();
    const size_t at = want["data_offset"].get<size_t>();
    ASSERT_LE(at + info.bytes, bytes.size());
    EXPECT_EQ(std::memcmp(*data, bytes.data() + at, info.bytes), 0);
  }
  EXPECT_EQ(file->FindTensor("nope"), nullptr);
}

TEST(GgufTest, DequantizationMatchesGgufPyBitForBit) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  for (const auto& [name, want] : Expected()["tensors"].items()) {
    SCOPED_TRACE(name + " (" + want["type"].get<std::string>() + ")");
    const TensorInfo* info = file->FindTensor(name);
    ASSERT_NE(info, nullptr);
    std::vector<float> values;
    ASSERT_TRUE(file->ReadTensor(*info, &values).ok());
    std::vector<uint32_t> bits = want["value_bits"];
    ASSERT_EQ(values.size(), bits.size());
    ASSERT_EQ(static_cast<int64_t>(values.size()), info->num_elements());
    int mismatches = 0;
    for (size_t i = 0; i < bits.size(); ++i) {
      const float expected = FromBits(bits[i]);
      const bool same = std::isnan(expected) ? std::isnan(values[i]) : ToBits(values[i]) == bits[i];
      if (!same && ++mismatches <= 5) {
        ADD_FAILURE() << "element " << i << ": got " << values[i] << ", gguf-py " << expected;
      }
    }
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(GgufTest, Version2IsAccepted) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, 4, 2);
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("v2.gguf", bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
  EXPECT_EQ((*file)->tensors().size(), 6u);
}

TEST(GgufTest, DefaultAlignmentIs32) {
  std::string bytes = GgufBuilder()
                          .Str("general.architecture", "x")
                          .TensorF32("a", {3}, {1, 2, 3})
                          .TensorF32("b", {2}, {4, 5})
                          .Build(32);
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("align.gguf", bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->alignment(), 32u);
  std::vector<float> b;
  ASSERT_TRUE((*file)->ReadTensor(*(*file)->FindTensor("b"), &b).ok());
  EXPECT_EQ(b, (std::vector<float>{4, 5}));
}

TEST(GgufTest, HalfConversionMatchesAllBitPatterns) {
  // Independent of the platform path: compare every finite half with exact arithmetic.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const int exponent = (h >> 10) & 0x1f;
    const int mantissa = h & 0x3ff;
    const float sign = (h & 0x8000) ? -1.0f : 1.0f;
    const float got = HalfToFloat(static_cast<uint16_t>(h));
    if (exponent == 0x1f) {
      EXPECT_TRUE(mantissa == 0 ? std::isinf(got) : std::isnan(got)) << h;
      continue;
    }
    const float want = exponent == 0 ? sign * std::ldexp(static_cast<float>(mantissa), -24)
                                     : sign * std::ldexp(1.0f + mantissa / 1024.0f, exponent - 15);
    ASSERT_EQ(ToBits(got), ToBits(want)) << "half 0x" << std::hex << h;
  }
}

TEST(GgufTest, LargeTensorsDequantizeInParallelChunksCorrectly) {
  // Over the 4M-element threshold for threads, with a partial last chunk; every block
  // has its own scale.
  const int64_t n = (int64_t{1} << 22) + 3 * 32;
  std::string data;
  for (int64_t b = 0; b < n / 32; ++b) {
    Append<uint16_t>(data, 0x3c00);  // d = 1.0
    for (int j = 0; j < 32; ++j) data.push_back(static_cast<char>((b + j) % 127));
  }
  std::vector<float> out(n);
  Dequantize(8, reinterpret_cast<const uint8_t*>(data.data()), n, out.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(out[i], static_cast<float>((i / 32 + i % 32) % 127)) << i;
  }
}

// ------------------------------------------------------------------ broken files

struct BrokenCase {
  const char* what;
  absl::StatusCode code;
  std::vector<std::string> message_parts;
};

void ExpectError(const absl::Status& status, const BrokenCase& c) {
  SCOPED_TRACE(c.what);
  ASSERT_FALSE(status.ok()) << "a broken file was accepted";
  EXPECT_EQ(status.code(), c.code) << status;
  for (const std::string& part : c.message_parts) EXPECT_THAT(Message(status), HasSubstr(part));
}

TEST(GgufBrokenTest, MissingFileIsNotFound) {
  const std::string path = ::testing::TempDir() + "/does_not_exist.gguf";
  ExpectError(File::Open(path).status(), {"missing", absl::StatusCode::kNotFound, {path}});
}

TEST(GgufBrokenTest, EmptyFile) {
  ExpectError(OpenBroken(""),
              {"empty", absl::StatusCode::kInvalidArgument, {"truncated", "header"}});
}

TEST(GgufBrokenTest, BadMagic) {
  std::string bytes = ReadBytes(kSyntheticPath);
  bytes[3] = 'X';
  ExpectError(
      OpenBroken(bytes),
      {"magic", absl::StatusCode::kInvalidArgument, {"not a GGUF file", "GGUX", "broken.gguf"}});
}

TEST(GgufBrokenTest, UnsupportedVersions) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, 4, 1);
  ExpectError(OpenBroken(bytes), {"v1", absl::StatusCode::kUnimplemented, {"version 1"}});
  Put<uint32_t>(bytes, 4, 4);
  ExpectError(OpenBroken(bytes), {"v4", absl::StatusCode::kUnimplemented, {"version 4"}});
  Put<uint32_t>(bytes, 4, 0x03000000);  // a big-endian v3 file
  ExpectError(OpenBroken(bytes), {"big-endian", absl::StatusCode::kUnimplemented, {"big-endian"}});
}

TEST(GgufBrokenTest, TruncatedHeader) {
  std::string bytes = ReadBytes(kSyntheticPath).substr(0, 10);
  ExpectError(OpenBroken(bytes), {"header",
                                  absl::StatusCode::kInvalidArgument,
                                  {"truncated", "header", "offset 8", "file size 10"}});
}

TEST(GgufBrokenTest, ImpossibleCountsInHeader) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, 16, uint64_t{1} << 40);  // metadata count
  ExpectError(OpenBroken(bytes),
              {"kv count", absl::StatusCode::kInvalidArgument, {"(of 1099511627776)"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, 8, ~uint64_t{0});  // tensor count
  ExpectError(OpenBroken(bytes), {"tensor count",
                                  absl::StatusCode::kInvalidArgument,
                                  {"tensor info #6 (of 18446744073709551615)"}});
}

TEST(GgufBrokenTest, TruncatedInMetadata) {
  const std::string full = ReadBytes(kSyntheticPath);
  ExpectError(OpenBroken(full.substr(0, ValueOffset("test.uint32") + 2)),
              {"in a value", absl::StatusCode::kInvalidArgument, {"truncated", "'test.uint32'"}});
  ExpectError(OpenBroken(full.substr(0, Expected()["key_offsets"]["test.int8"].get<size_t>() + 5)),
              {"in a key", absl::StatusCode::kInvalidArgument, {"truncated", "metadata key"}});
}

TEST(GgufBrokenTest, StringLengthPastEndOfFile) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, ValueOffset("test.string"), 1000000);
  ExpectError(
      OpenBroken(bytes),
      {"string", absl::StatusCode::kInvalidArgument, {"'test.string'", "1000000", "past the end"}});
  Put<uint64_t>(bytes, ValueOffset("test.string"), uint64_t{1} << 62);
  ExpectError(
      OpenBroken(bytes),
      {"huge string", absl::StatusCode::kInvalidArgument, {"'test.string'", "exceeds the limit"}});
  // A key's own length.
  bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, Expected()["key_offsets"]["test.int8"].get<size_t>(), 5000);
  ExpectError(
      OpenBroken(bytes),
      {"key", absl::StatusCode::kInvalidArgument, {"metadata key length 5000", "past the end"}});
}

TEST(GgufBrokenTest, AbsurdArrayCount) {
  std::string bytes = ReadBytes(kSyntheticPath);
  const size_t count_at = ValueOffset("test.array.int32") + 4;
  Put<uint64_t>(bytes, count_at, uint64_t{1} << 60);
  ExpectError(OpenBroken(bytes), {"2^60",
                                  absl::StatusCode::kInvalidArgument,
                                  {"'test.array.int32'", "array length", "exceeds the limit"}});
  Put<uint64_t>(bytes, count_at, 1000000);  // under the limit, but not in this file
  ExpectError(OpenBroken(bytes),
              {"1e6",
               absl::StatusCode::kInvalidArgument,
               {"'test.array.int32'", "1000000 int32 elements", "runs past the end"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, ValueOffset("test.array.string") + 4, 5000);
  ExpectError(OpenBroken(bytes),
              {"strings", absl::StatusCode::kInvalidArgument, {"'test.array.string'"}});
}

TEST(GgufBrokenTest, UnknownValueType) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, ValueOffset("test.int8") - 4, 13);
  ExpectError(
      OpenBroken(bytes),
      {"value type", absl::StatusCode::kInvalidArgument, {"'test.int8'", "unknown value type 13"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, ValueOffset("test.array.int32"), 99);
  ExpectError(OpenBroken(bytes), {"element type",
                                  absl::StatusCode::kInvalidArgument,
                                  {"'test.array.int32'", "unknown value type 99"}});
}

TEST(GgufBrokenTest, ArraysNestedTooDeep) {
  std::string payload;
  for (int depth = 0; depth < 12; ++depth) {
    Append<uint32_t>(payload, testing_util::kArray);
    Append<uint64_t>(payload, 1);
  }
  Append<uint32_t>(payload, testing_util::kU8);
  Append<uint64_t>(payload, 0);
  std::string bytes = GgufBuilder().Raw("deep", testing_util::kArray, payload).Build();
  ExpectError(OpenBroken(bytes),
              {"deep", absl::StatusCode::kInvalidArgument, {"'deep'", "nested"}});
}

TEST(GgufBrokenTest, DuplicateKeyOrTensorName) {
  std::string bytes = ReadBytes(kSyntheticPath);
  const size_t key_at = Expected()["key_offsets"]["test.int16"].get<size_t>() + 8;
  bytes.replace(key_at, 10, "test.int32");
  ExpectError(OpenBroken(bytes),
              {"key", absl::StatusCode::kInvalidArgument, {"duplicate metadata key 'test.int32'"}});
  bytes = ReadBytes(kSyntheticPath);
  const size_t name_at = Expected()["tensor_info_offsets"]["t.f16"].get<size_t>() + 8;
  bytes.replace(name_at, 5, "t.f32");
  ExpectError(OpenBroken(bytes),
              {"tensor", absl::StatusCode::kInvalidArgument, {"duplicate tensor name 't.f32'"}});
}

TEST(GgufBrokenTest, BadAlignment) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, ValueOffset("general.alignment"), 48);
  ExpectError(
      OpenBroken(bytes),
      {"48", absl::StatusCode::kInvalidArgument, {"general.alignment = 48", "power of two"}});
  Put<uint32_t>(bytes, ValueOffset("general.alignment"), 0);
  ExpectError(OpenBroken(bytes), {"0", absl::StatusCode::kInvalidArgument, {"general.alignment"}});
}

TEST(GgufBrokenTest, TensorOffsetPastEnd) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, TensorOffsetOffset("t.q4_1"), uint64_t{1} << 40);
  ExpectError(OpenBroken(bytes),
              {"offset", absl::StatusCode::kInvalidArgument, {"'t.q4_1'", "past the end"}});
  Put<uint64_t>(bytes, TensorOffsetOffset("t.q4_1"), ~uint64_t{0} - 63);  // overflows if added
  ExpectError(
      OpenBroken(bytes),
      {"offset near 2^64", absl::StatusCode::kInvalidArgument, {"'t.q4_1'", "past the end"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, TensorOffsetOffset("t.f16"), 64 * 13 + 1);
  ExpectError(OpenBroken(bytes), {"misaligned",
                                  absl::StatusCode::kInvalidArgument,
                                  {"'t.f16'", "not a multiple of the alignment 64"}});
}

// As ggml's reader requires (ggml/src/gguf.cpp): each tensor at the previous one's offset
// plus its size padded to the alignment, so no two share bytes (a file whose layers all point
// at one block would otherwise be converted once per layer).
TEST(GgufBrokenTest, TensorsMustBeContiguousInOrderAsGgmlRequires) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, TensorOffsetOffset("t.f16"), 0);  // on top of t.f32
  ExpectError(
      OpenBroken(bytes),
      {"overlap", absl::StatusCode::kInvalidArgument, {"'t.f16' has data offset 0, expected 768", "as ggml requires"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<uint64_t>(bytes, TensorOffsetOffset("t.f16"), 768 + 64);  // a gap after t.f32
  ExpectError(OpenBroken(bytes),
              {"gap", absl::StatusCode::kInvalidArgument, {"'t.f16' has data offset 832, expected 768"}});
}

TEST(GgufBrokenTest, TensorDataTruncated) {
  std::string bytes = ReadBytes(kSyntheticPath);
  bytes.resize(bytes.size() - 10);
  ExpectError(OpenBroken(bytes),
              {"data", absl::StatusCode::kInvalidArgument, {"'t.q4_1'", "truncated", "Q4_1"}});
  // Truncated inside the tensor infos.
  bytes = ReadBytes(kSyntheticPath).substr(0, TensorTypeOffset("t.bf16") + 1);
  ExpectError(
      OpenBroken(bytes),
      {"infos", absl::StatusCode::kInvalidArgument, {"'t.bf16'", "truncated in tensor type"}});
}

TEST(GgufBrokenTest, BadTensorShapes) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, TensorDimsOffset("t.f32") - 4, 5);
  ExpectError(OpenBroken(bytes),
              {"5 dims", absl::StatusCode::kInvalidArgument, {"'t.f32'", "5 dimensions"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<int64_t>(bytes, TensorDimsOffset("t.f32") + 8, -3);
  ExpectError(OpenBroken(bytes),
              {"negative", absl::StatusCode::kInvalidArgument, {"'t.f32'", "negative"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<int64_t>(bytes, TensorDimsOffset("t.q8_0"), 33);
  ExpectError(OpenBroken(bytes), {"block",
                                  absl::StatusCode::kInvalidArgument,
                                  {"'t.q8_0'", "row length 33", "Q8_0 block size 32"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<int64_t>(bytes, TensorDimsOffset("t.f32"), int64_t{1} << 40);
  Put<int64_t>(bytes, TensorDimsOffset("t.f32") + 8, int64_t{1} << 40);
  ExpectError(OpenBroken(bytes),
              {"overflow", absl::StatusCode::kInvalidArgument, {"'t.f32'", "overflows"}});
  bytes = ReadBytes(kSyntheticPath);
  Put<int64_t>(bytes, TensorDimsOffset("t.f32") + 8, int64_t{1} << 40);  // fits, not in file
  ExpectError(OpenBroken(bytes),
              {"huge", absl::StatusCode::kInvalidArgument, {"'t.f32'", "truncated"}});
}

TEST(GgufBrokenTest, UnknownTensorType) {
  std::string bytes = ReadBytes(kSyntheticPath);
  Put<uint32_t>(bytes, TensorTypeOffset("t.bf16"), 99);
  ExpectError(OpenBroken(bytes),
              {"99", absl::StatusCode::kUnimplemented, {"'t.bf16'", "unknown ggml type 99"}});
}

TEST(GgufBrokenTest, UnsupportedTensorTypeOpensButCannotBeRead) {
  // Q6_K (14): 256 values in 210 bytes. Opening works (metadata stays readable);
  // converting it names the tensor and the type.
  std::string bytes = GgufBuilder()
                          .Str("general.architecture", "x")
                          .Tensor("blk.0.attn_q.weight", {256}, 14, std::string(210, '\0'))
                          .Build();
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("q6k.gguf", bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<float> out;
  ExpectError((*file)->ReadTensor((*file)->tensors()[0], &out),
              {"Q6_K", absl::StatusCode::kUnimplemented, {"'blk.0.attn_q.weight'", "Q6_K (14)"}});
}

TEST(GgufBrokenTest, ReadTensorRejectsForeignTensorInfo) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  TensorInfo forged = file->tensors()[0];
  forged.name = "not.in.file";
  std::vector<float> out;
  ExpectError(file->ReadTensor(forged, &out),
              {"foreign", absl::StatusCode::kNotFound, {"not.in.file"}});
}

// Every prefix of a valid file must be rejected cleanly (run under ASan: no
// out-of-bounds read), and random corruption must never crash.
TEST(GgufBrokenTest, EveryTruncationIsRejected) {
  const std::string full = ReadBytes(kSyntheticPath);
  const size_t data_offset = Expected()["data_offset"].get<size_t>();
  const size_t data_end = Expected()["data_end"].get<size_t>();  // then only padding
  ASSERT_LE(data_end, full.size());
  for (size_t n = 0; n < data_end; ++n) {
    absl::Status status = OpenBroken(full.substr(0, n));
    ASSERT_FALSE(status.ok()) << "accepted a file cut at " << n << " bytes";
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << n << ": " << status;
    ASSERT_THAT(Message(status), AnyOf(HasSubstr("truncated"), HasSubstr("past the end"))) << n;
    if (n >= data_offset) {
      ASSERT_THAT(Message(status), HasSubstr("tensor 't.")) << n;
    }
  }
}

TEST(GgufBrokenTest, RandomCorruptionNeverCrashes) {
  const std::string full = ReadBytes(kSyntheticPath);
  const size_t header_end = Expected()["data_offset"].get<size_t>();
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      bytes[rng() % header_end] = static_cast<char>(rng() & 0xff);
    }
    absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("fuzz.gguf", bytes));
    if (!file.ok()) continue;
    ++accepted;
    // Whatever was accepted must be readable without going out of bounds.
    for (const std::string& key : (*file)->Keys()) (void)(*file)->GetJson(key);
    for (const TensorInfo& t : (*file)->tensors()) {
      std::vector<float> out;
      (void)(*file)->ReadTensor(t, &out);
    }
  }
  EXPECT_GT(accepted, 0);  // some flips only touch values, which must still be accepted
}

}  // namespace
}  // namespace medusa::gguf
