#pragma once
// Helpers for the GGUF / model-loader tests: file bytes in and out of a temp
// directory, and a minimal GGUF writer to build valid and broken files in memory.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace medusa::testing_util {

inline std::string SourcePath(const std::string& relative) {
  return std::string(MEDUSA_SOURCE_DIR) + "/" + relative;
}

// Reads a whole file; fails the test (with the path) when it is missing.
inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path
                         << " (run scripts/setup or tests/reference/make_gguf_fixtures.py)";
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Writes bytes to a fresh file under the test temp directory and returns its path.
inline std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string path = ::testing::TempDir() + "/medusa_" +
                     (info != nullptr ? std::string(info->name()) + "_" : std::string()) + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

template <typename T>
void Put(std::string& bytes, size_t offset, T value) {
  ASSERT_LE(offset + sizeof(T), bytes.size()) << "mutation past the end of the test file";
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

template <typename T>
void Append(std::string& bytes, T value) {
  bytes.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

inline void AppendString(std::string& bytes, const std::string& s) {
  Append<uint64_t>(bytes, s.size());
  bytes += s;
}

// GGUF value type ids (gguf.md).
enum : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// Builds a GGUF v3 file in memory. Values are stored as (type id + payload) so
// tests can also put in malformed payloads.
class GgufBuilder {
 public:
  GgufBuilder& Raw(const std::string& key, uint32_t type, std::string payload) {
    Remove(key);
    kvs_.push_back({key, type, std::move(payload)});
    return *this;
  }
  GgufBuilder& U32(const std::string& key, uint32_t v) { return Raw(key, kU32, Bytes(v)); }
  GgufBuilder& I32(const std::string& key, int32_t v) { return Raw(key, kI32, Bytes(v)); }
  GgufBuilder& F32(const std::string& key, float v) { return Raw(key, kF32, Bytes(v)); }
  GgufBuilder& Str(const std::string& key, const std::string& v) {
    std::string p;
    AppendString(p, v);
    return Raw(key, kString, p);
  }
  GgufBuilder& StrArray(const std::string& key, const std::vector<std::string>& v) {
    std::string p;
    Append<uint32_t>(p, kString);
    Append<uint64_t>(p, v.size());
    for (const std::string& s : v) AppendString(p, s);
    return Raw(key, kArray, p);
  }
  GgufBuilder& Remove(const std::string& key) {
    std::erase_if(kvs_, [&](const Kv& kv) { return kv.key == key; });
    return *this;
  }

  GgufBuilder& Tensor(const std::string& name, std::vector<int64_t> dims, uint32_t type,
                      std::string data) {
    RemoveTensor(name);
    tensors_.push_back({name, std::move(dims), type, std::move(data)});
    return *this;
  }
  GgufBuilder& TensorF32(const std::string& name, std::vector<int64_t> dims,
                         const std::vector<float>& values) {
    std::string data(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    return Tensor(name, std::move(dims), 0, std::move(data));
  }
  GgufBuilder& RemoveTensor(const std::string& name) {
    std::erase_if(tensors_, [&](const TensorEntry& t) { return t.name == name; });
    return *this;
  }

  std::string Build(uint64_t alignment = 32) const {
    std::string out = "GGUF";
    Append<uint32_t>(out, 3);
    Append<uint64_t>(out, tensors_.size());
    Append<uint64_t>(out, kvs_.size());
    for (const Kv& kv : kvs_) {
      AppendString(out, kv.key);
      Append<uint32_t>(out, kv.type);
      out += kv.payload;
    }
    uint64_t offset = 0;
    for (const TensorEntry& t : tensors_) {
      AppendString(out, t.name);
      Append<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
      for (int64_t d : t.dims) Append<int64_t>(out, d);
      Append<uint32_t>(out, t.type);
      Append<uint64_t>(out, offset);
      offset = AlignUp(offset + t.data.size(), alignment);
    }
    out.resize(AlignUp(out.size(), alignment), '\0');
    for (const TensorEntry& t : tensors_) {
      out += t.data;
      out.resize(AlignUp(out.size(), alignment), '\0');
    }
    return out;
  }

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::string payload;
  };
  struct TensorEntry {
    std::string name;
    std::vector<int64_t> dims;
    uint32_t type;
    std::string data;
  };
  template <typename T>
  static std::string Bytes(T v) {
    return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static uint64_t AlignUp(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

  std::vector<Kv> kvs_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace medusa::testing_util
