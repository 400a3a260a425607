// Safetensors reader and writer: a file written by the Hugging Face `safetensors`
// package (tests/reference/make_safetensors_fixtures.py) read back bit for bit,
// broken files that must give clear errors, and the writer's round trip and rounding.

#include "engine/model/safetensors.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "engine/model/dequant.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/model_test_util.h"

namespace medusa::safetensors {
namespace {

using ::medusa::testing_util::ReadBytes;
using ::medusa::testing_util::SourcePath;
using ::medusa::testing_util::WriteTemp;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kSyntheticPath = SourcePath("tests/fixtures/safetensors_synthetic.safetensors");

const nlohmann::json& Expected() {
  static const nlohmann::json* expected = new nlohmann::json(
      nlohmann::json::parse(ReadBytes(SourcePath("tests/fixtures/safetensors_synthetic.json"))));
  return *expected;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

std::unique_ptr<File> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? *std::move(file) : nullptr;
}

// A file from a header text and data bytes, as the format lays them out.
std::string FileBytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

// Opens bytes written to a temp file; returns the error (OK if it opened).
absl::Status OpenBroken(const std::string& bytes) {
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("broken.safetensors", bytes));
  return file.ok() ? absl::OkStatus() : file.status();
}

// A valid two-tensor file ("a": F32 [2, 2], "b": F16 [3]) to break in various ways.
const char kGoodHeader[] =
    R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]}})";
const std::string kGoodData(22, '\x01');

// ------------------------------------------------------------------ valid file

TEST(SafetensorsTest, HeaderMatchesReferenceWriter) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->data_offset(), 8 + Expected()["header_len"].get<uint64_t>());
  EXPECT_EQ(file->path(), kSyntheticPath);
  ASSERT_EQ(file->tensors().size(), Expected()["tensors"].size());
  for (const TensorInfo& info : file->tensors()) {
    SCOPED_TRACE(info.name);
    ASSERT_TRUE(Expected()["tensors"].contains(info.name));
    const nlohmann::json& want = Expected()["tensors"][info.name];
    EXPECT_EQ(info.dtype_name, want["dtype"].get<std::string>());
    EXPECT_EQ(DTypeName(info.dtype), want["dtype"].get<std::string>());
    EXPECT_EQ(info.shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(info.begin, want["data_offsets"][0].get<uint64_t>());
    EXPECT_EQ(info.end, want["data_offsets"][1].get<uint64_t>());
    EXPECT_EQ(file->FindTensor(info.name), &info);
  }
}

TEST(SafetensorsTest, TensorsKeepHeaderOrder) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  // The reference writer lays data out in header order, so offsets ascend.
  for (size_t i = 1; i < file->tensors().size(); ++i) {
    EXPECT_LE(file->tensors()[i - 1].end, file->tensors()[i].begin) << file->tensors()[i].name;
  }
}

TEST(SafetensorsTest, FloatTensorsMatchTorchBitForBit) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  int checked = 0;
  for (const auto& [name, want] : Expected()["tensors"].items()) {
    if (!want.contains("bits")) continue;
    SCOPED_TRACE(name);
    absl::StatusOr<std::vector<float>> values = file->ReadTensor(name);
    ASSERT_TRUE(values.ok()) << values.status();
    const auto bits = want["bits"].get<std::vector<uint32_t>>();
    ASSERT_EQ(values->size(), bits.size());
    for (size_t i = 0; i < bits.size(); ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>((*values)[i]), bits[i]) << "element " << i;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 6);  // f32, f16, bf16, scalar, empty, cube
}

TEST(SafetensorsTest, ScalarAndEmptyTensors) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  const TensorInfo* scalar = file->FindTensor("scalar.f32");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->num_elements(), 1);
  EXPECT_THAT(*file->ReadTensor("scalar.f32"), ElementsAre(2.5f));

  const TensorInfo* empty = file->FindTensor("empty.f32");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->num_elements(), 0);
  EXPECT_EQ(empty->bytes(), 0u);
  std::vector<float> out = {1.0f, 2.0f};
  ASSERT_TRUE(file->ReadTensor("empty.f32", &out).ok());
  EXPECT_TRUE(out.empty());
}

TEST(SafetensorsTest, MetadataIsAvailable) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->metadata(), Expected()["metadata"]);
  EXPECT_EQ(file->metadata().value("format", ""), "pt");
  EXPECT_EQ(file->FindTensor("__metadata__"), nullptr);
}

TEST(SafetensorsTest, NonFloatTensorIsUnimplementedButItsBytesAreThere) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  std::vector<float> out;
  absl::Status s = file->ReadTensor("counts.i32", &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("counts.i32"), HasSubstr("I32")));

  absl::StatusOr<absl::Span<const uint8_t>> raw = file->TensorData("counts.i32");
  ASSERT_TRUE(raw.ok());
  ASSERT_EQ(raw->size(), 6 * sizeof(int32_t));
  std::vector<int32_t> ints(6);
  std::memcpy(ints.data(), raw->data(), raw->size());
  EXPECT_THAT(ints, ElementsAre(-3, -2, -1, 0, 1, 2));
}

TEST(SafetensorsTest, MissingTensorAndFileAreNotFound) {
  std::unique_ptr<File> file = OpenOrDie(kSyntheticPath);
  ASSERT_NE(file, nullptr);
  absl::StatusOr<std::vector<float>> missing = file->ReadTensor("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), HasSubstr("nope"));

  absl::StatusOr<std::unique_ptr<File>> absent = File::Open("/nonexistent/heads.safetensors");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, DTypeNamesAndSizes) {
  EXPECT_EQ(ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(ParseDType("F64"), DType::kF64);
  EXPECT_EQ(DTypeSize(DType::kF64), 8);
  EXPECT_EQ(ParseDType("F8_E4M3"), DType::kF8E4M3);
  EXPECT_EQ(ParseDType("Q4_NEW"), DType::kOther);
  EXPECT_EQ(DTypeSize(DType::kOther), 0);
  EXPECT_TRUE(CanReadAsFloat(DType::kF16));
  EXPECT_FALSE(CanReadAsFloat(DType::kF64));
}

// A sub-byte dtype the reference crate knows (F4: two per byte) opens, its size checked in
// bits; reading it as float is Unimplemented.
TEST(SafetensorsTest, SubByteDtypeOpensButCannotBeRead) {
  const std::string header = R"({"x":{"dtype":"F4","shape":[8],"data_offsets":[0,4]}})";
  absl::StatusOr<std::unique_ptr<File>> file =
      File::Open(WriteTemp("f4.safetensors", FileBytes(header, std::string(4, '\0'))));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->FindTensor("x")->dtype, DType::kF4);
  EXPECT_EQ(DTypeBits(DType::kF4), 4);
  EXPECT_EQ((*file)->ReadTensor("x").status().code(), absl::StatusCode::kUnimplemented);
}

// Tensors listed out of offset order open when, sorted by offset, they are contiguous (the
// reference crate sorts them too); tensors() keeps the header's order.
TEST(SafetensorsTest, HeaderOrderNeedNotBeOffsetOrder) {
  const std::string header = R"({"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},)"
                             R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(WriteTemp("order.safetensors", FileBytes(header, kGoodData)));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0].name, "b");
}

// ------------------------------------------------------------------ broken files

TEST(SafetensorsBrokenTest, GoodBaseFileOpens) {
  EXPECT_TRUE(OpenBroken(FileBytes(kGoodHeader, kGoodData)).ok());
}

struct BrokenCase {
  const char* what;
  std::string bytes;
  std::vector<std::string> message_parts;
};

std::vector<BrokenCase> BrokenCases() {
  auto with_header = [](const std::string& h) { return FileBytes(h, kGoodData); };
  std::string huge_len(8, '\0');
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(huge_len.data(), &huge, 8);
  std::string past_end = FileBytes(kGoodHeader, kGoodData);
  const uint64_t too_long = sizeof(kGoodHeader) + 100;
  std::memcpy(past_end.data(), &too_long, 8);
  return {
      {"shorter than the length field", "\x05\x00\x00", {"fewer than the 8-byte"}},
      {"huge header length", huge_len + "{}", {"header length", "exceeds"}},
      {"header length past the end", past_end, {"runs past the end"}},
      {"header not JSON", with_header("{\"a\": [1, 2"), {"not valid JSON"}},
      {"header not an object", with_header("[1, 2]"), {"not a JSON object"}},
      {"entry not an object", with_header(R"({"a": 3})"), {"'a'", "not a JSON object"}},
      {"missing dtype", with_header(R"({"a":{"shape":[2,2],"data_offsets":[0,16]}})"), {"'a'", "dtype"}},
      {"dtype not a string", with_header(R"({"a":{"dtype":7,"shape":[2,2],"data_offsets":[0,16]}})"), {"'a'", "dtype"}},
      {"missing shape", with_header(R"({"a":{"dtype":"F32","data_offsets":[0,16]}})"), {"'a'", "shape"}},
      {"negative dim",
       with_header(R"({"a":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}})"),
       {"'a'", "non-negative integer"}},
      {"fractional dim",
       with_header(R"({"a":{"dtype":"F32","shape":[1.5,2],"data_offsets":[0,16]}})"),
       {"'a'", "non-negative integer"}},
      {"overflowing shape",
       with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
                   R"("data_offsets":[0,16]}})"),
       {"'a'", "overflows"}},
      {"missing offsets", with_header(R"({"a":{"dtype":"F32","shape":[2,2]}})"), {"'a'", "data_offsets"}},
      {"three offsets",
       with_header(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8,16]}})"),
       {"'a'", "data_offsets"}},
      {"negative offset",
       with_header(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[-4,12]}})"),
       {"'a'", "data_offsets"}},
      {"offsets reversed",
       with_header(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})"),
       {"'a'", "end before they begin"}},
      {"offsets past the data",
       with_header(R"({"a":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]}})"),
       {"'a'", "past the data section", "22 bytes"}},
      {"size does not match shape",
       with_header(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})"),
       {"'a'", "[2, 3]", "needs 24 bytes", "hold 16"}},
      {"overlap",
       with_header(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                   R"("b":{"dtype":"F16","shape":[3],"data_offsets":[12,18]}})"),
       {"'a'", "'b'", "overlap"}},
      // As the reference crate (huggingface/safetensors, Metadata::validate): the tensors,
      // sorted by offset, cover the data section exactly.
      {"gap between tensors",
       FileBytes(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                 R"("b":{"dtype":"F16","shape":[3],"data_offsets":[20,26]}})",
                 std::string(26, '\x01')),
       {"'b'", "gap after tensor 'a'", "contiguous"}},
      {"data not starting at 0",
       FileBytes(R"({"b":{"dtype":"F16","shape":[3],"data_offsets":[4,10]}})", std::string(10, '\x01')),
       {"'b'", "gap after the start of the data section"}},
      {"trailing bytes", FileBytes(kGoodHeader, kGoodData + "xyz"), {"cover 22 bytes of the 25-byte", "3 trailing"}},
      {"no tensors but data", FileBytes("{}", "abc"), {"3 trailing"}},
      {"unknown dtype",
       with_header(R"({"a":{"dtype":"Q4_NEW","shape":[2,2],"data_offsets":[0,16]}})"),
       {"'a'", "unknown dtype 'Q4_NEW'"}},
      {"sub-byte dtype not filling its bytes",
       FileBytes(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", "ab"),
       {"'a'", "needs 1.5 bytes"}},
      {"metadata value not a string",
       with_header(R"({"__metadata__":{"k":{"nested":1}},"a":{"dtype":"F32","shape":[2,2],)"
                   R"("data_offsets":[0,16]},"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]}})"),
       {"'__metadata__' value of 'k' is not a string", "{\"nested\":1}"}},
      {"metadata nested 200,000 deep",
       with_header("{\"__metadata__\":{\"k\":" + std::string(200000, '[') + std::string(200000, ']') + "}}"),
       {"nests deeper than 64 levels"}},
      {"shape nested 200,000 deep",
       with_header("{\"a\":{\"dtype\":\"F32\",\"shape\":" + std::string(200000, '[') + std::string(200000, ']') +
                   ",\"data_offsets\":[0,16]}}"),
       {"nests deeper than 64 levels", "at byte"}},
      {"metadata not an object",
       with_header(R"({"__metadata__":[1],"a":{"dtype":"F32","shape":[2,2],)"
                   R"("data_offsets":[0,16]}})"),
       {"__metadata__"}},
      {"truncated data", FileBytes(kGoodHeader, kGoodData.substr(0, 20)), {"'b'", "past the data section"}},
  };
}

TEST(SafetensorsBrokenTest, EveryBrokenFileGivesAClearInvalidArgument) {
  for (const BrokenCase& c : BrokenCases()) {
    SCOPED_TRACE(c.what);
    absl::Status s = OpenBroken(c.bytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s.ToString().substr(0, 500);
    EXPECT_THAT(Message(s), HasSubstr("broken.safetensors"));
    EXPECT_LT(Message(s).size(), 1000u) << "messages quote at most a few hundred bytes of the input";
    for (const std::string& part : c.message_parts) EXPECT_THAT(Message(s), HasSubstr(part));
  }
}

// A long tensor name in an error is quoted in part only.
TEST(SafetensorsBrokenTest, ErrorsQuoteAtMostAFewHundredBytes) {
  const std::string name(100000, 'n');
  absl::Status s =
      OpenBroken(FileBytes("{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", ""));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("nnn..."), HasSubstr("past the data section")));
  EXPECT_LT(Message(s).size(), 600u);
}

// Random byte corruption of the reference file must never crash: it opens (and then
// every float tensor reads) or it fails with a status.
TEST(SafetensorsBrokenTest, RandomCorruptionNeverCrashes) {
  const std::string good = ReadBytes(kSyntheticPath);
  std::mt19937 rng(42);
  int failures = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly in the header, where the structure lives.
      const size_t limit = rng() % 4 == 0 ? bytes.size() : std::min<size_t>(bytes.size(), 560);
      bytes[rng() % limit] = static_cast<char>(rng());
    }
    if (rng() % 8 == 0) bytes.resize(rng() % bytes.size());
    absl::StatusOr<std::unique_ptr<File>> file =
        File::Open(WriteTemp("fuzz.safetensors", bytes));
    if (!file.ok()) {
      ++failures;
      EXPECT_NE(Message(file.status()), "");
      continue;
    }
    for (const TensorInfo& t : (*file)->tensors()) {
      std::vector<float> out;
      absl::Status s = (*file)->ReadTensor(t.name, &out);
      if (s.ok()) {
        EXPECT_EQ(static_cast<int64_t>(out.size()), t.num_elements());
      }
    }
  }
  EXPECT_GT(failures, 0);
}

// ------------------------------------------------------------------ writer

TEST(SafetensorsWriterTest, RoundTripsEveryFloatDtype) {
  std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-3f};
  std::vector<float> b = {0.5f, 65504.0f, -1.0f / 3.0f};
  std::vector<float> c = {1.0f, 3.0f / 7.0f};
  std::vector<float> scalar = {4.0f};
  const std::string path = WriteTemp("written.safetensors", "");
  ASSERT_TRUE(WriteFile(path,
                        {{"a", {2, 3}, a, DType::kF32},
                         {"b", {3}, b, DType::kF16},
                         {"c", {1, 2}, c, DType::kBF16},
                         {"s", {}, scalar, DType::kF32}},
                        {{"kind", "test"}, {"count", 3}})
                  .ok());
  std::unique_ptr<File> file = OpenOrDie(path);
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->data_offset() % 8, 0u);
  ASSERT_EQ(file->tensors().size(), 4u);
  EXPECT_EQ(file->tensors()[0].name, "a");
  EXPECT_EQ(file->tensors()[3].name, "s");
  EXPECT_EQ(file->FindTensor("b")->dtype, DType::kF16);
  EXPECT_EQ(file->FindTensor("c")->shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(*file->ReadTensor("a"), a);
  EXPECT_THAT(*file->ReadTensor("b"), ElementsAre(0.5f, 65504.0f, gguf::HalfToFloat(0xb555)));
  EXPECT_THAT(*file->ReadTensor("c"), ElementsAre(1.0f, gguf::BFloat16ToFloat(0x3edb)));
  EXPECT_THAT(*file->ReadTensor("s"), ElementsAre(4.0f));
  // Metadata values are strings, as the spec wants.
  EXPECT_EQ(file->metadata(), (nlohmann::json{{"kind", "test"}, {"count", "3"}}));
}

TEST(SafetensorsWriterTest, RejectsBadInput) {
  std::vector<float> v = {1, 2, 3};
  const std::string path = WriteTemp("bad.safetensors", "");
  absl::Status dup = WriteFile(path, {{"x", {3}, v}, {"x", {3}, v}}, nullptr);
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(dup), HasSubstr("'x'"));
  absl::Status count = WriteFile(path, {{"y", {2, 2}, v}}, nullptr);
  EXPECT_EQ(count.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(count), AllOf(HasSubstr("'y'"), HasSubstr("needs 4 values, got 3")));
  absl::Status dtype = WriteFile(path, {{"z", {3}, v, DType::kI32}}, nullptr);
  EXPECT_THAT(Message(dtype), AllOf(HasSubstr("'z'"), HasSubstr("I32")));
  absl::Status meta = WriteFile(path, {{"w", {3}, v}}, nlohmann::json::array({1}));
  EXPECT_EQ(meta.code(), absl::StatusCode::kInvalidArgument);
  absl::Status where = WriteFile("/nonexistent/dir/x.safetensors", {{"w", {3}, v}}, nullptr);
  EXPECT_FALSE(where.ok());
  EXPECT_THAT(Message(where), HasSubstr("/nonexistent/dir/x.safetensors"));
}

// Every half value converts back to itself (NaNs to a NaN).
TEST(SafetensorsWriterTest, FloatToHalfInvertsHalfToFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = gguf::HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(gguf::HalfToFloat(FloatToHalf(f)))) << h;
    } else {
      ASSERT_EQ(FloatToHalf(f), h) << "half bits " << h << " = " << f;
    }
  }
}

TEST(SafetensorsWriterTest, FloatToBFloat16InvertsBFloat16ToFloat) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = gguf::BFloat16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(gguf::BFloat16ToFloat(FloatToBFloat16(f)))) << h;
    } else {
      ASSERT_EQ(FloatToBFloat16(f), h) << "bfloat16 bits " << h;
    }
  }
}

// The rounding is to the nearest representable value, ties to even: checked against
// a brute-force search over the neighbours, for random floats and exact midpoints.
template <typename ToBits, typename FromBits>
void CheckNearestEven(ToBits to_bits, FromBits from_bits, float max_finite, const char* what) {
  std::mt19937 rng(7);
  std::vector<float> samples;
  for (int i = 0; i < 20000; ++i) {
    // Random exponents over the whole range of the format, subnormals included.
    const float mag = std::ldexp(std::uniform_real_distribution<float>(1.0f, 2.0f)(rng),
                                 static_cast<int>(rng() % 60) - 40);
    samples.push_back(rng() % 2 ? mag : -mag);
  }
  // Exact midpoints between consecutive representable values.
  for (uint32_t h = 0; h < 0x7bff; h += 97) {
    const double lo = from_bits(static_cast<uint16_t>(h));
    const double hi = from_bits(static_cast<uint16_t>(h + 1));
    samples.push_back(static_cast<float>((lo + hi) / 2));
  }
  for (float f : samples) {
    const uint16_t got = to_bits(f);
    if (std::fabs(f) > max_finite) continue;  // overflow is checked separately
    const double err = std::fabs(double(from_bits(got)) - f);
    for (int d = -1; d <= 1; d += 2) {
      const uint16_t other = static_cast<uint16_t>(got + d);
      const double other_value = from_bits(other);
      if (std::isnan(other_value) || std::isinf(other_value)) continue;
      if ((other & 0x7fff) == 0x7fff || ((got ^ other) & 0x8000)) continue;  // sign wrap
      const double other_err = std::fabs(other_value - f);
      ASSERT_LE(err, other_err) << what << ": " << f << " -> " << from_bits(got);
      if (err == other_err) {
        ASSERT_EQ(got & 1, 0) << what << " tie not to even: " << f;
      }
    }
  }
}

TEST(SafetensorsWriterTest, HalfRoundsToNearestEven) {
  CheckNearestEven(FloatToHalf, gguf::HalfToFloat, 65504.0f, "F16");
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);  // just under the midpoint to infinity
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // the midpoint rounds to even: infinity
  EXPECT_EQ(FloatToHalf(-1e9f), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);   // half the smallest subnormal: even
  EXPECT_EQ(FloatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);   // 1.5 units: to even (2)
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
}

TEST(SafetensorsWriterTest, BFloat16RoundsToNearestEven) {
  CheckNearestEven(FloatToBFloat16, gguf::BFloat16ToFloat, 3.0e38f, "BF16");
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(FloatToBFloat16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(FloatToBFloat16(std::numeric_limits<float>::max()), 0x7f80);  // overflow: inf
}

}  // namespace
}  // namespace medusa::safetensors
