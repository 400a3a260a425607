#pragma once
// GGUF reader (v2 and v3): header, metadata of every value type, tensor infos,
// alignment, and tensor data dequantized to float32.
// Spec: https://github.com/ggerganov/ggml/blob/master/docs/gguf.md

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa::gguf {

enum class ValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

// "uint8", ..., "array" (the spec's names).
const char* ValueTypeName(ValueType type);

// ggml tensor types the engine reads. Others are rejected with a clear error.
enum class TensorType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30,
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the fastest-varying (row length)
  uint32_t type = 0;          // raw ggml type id
  uint64_t offset = 0;        // relative to the start of the data section
  uint64_t bytes = 0;         // size of the data in the file
  int64_t num_elements() const;
};

// Errors: NotFound for a missing file; InvalidArgument for a malformed or truncated
// file (the message names the key or tensor, the offset and what was expected);
// Unimplemented for a well-formed file using something this reader does not
// support (GGUF v1, a big-endian file, a tensor type it cannot dequantize).
class File {
 public:
  // Reads and validates the whole header (metadata and tensor infos): every
  // length, count and offset is checked against the file size. Tensor data is
  // read lazily (the file is memory-mapped).
  static absl::StatusOr<std::unique_ptr<File>> Open(const std::string& path);
  ~File();

  uint32_t version() const;
  uint64_t alignment() const;

  bool Has(std::string_view key) const;
  ValueType TypeOf(std::string_view key) const;  // precondition: Has(key) (else no valid type)
  // Scalar getters convert between integer widths; NotFound when absent,
  // InvalidArgument (naming the key) when the type does not fit.
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;  // also accepts integers
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<double>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  std::vector<std::string> Keys() const;  // in file order
  // Number of elements of an array value (without decoding it).
  absl::StatusOr<uint64_t> ArrayLength(std::string_view key) const;
  // Any value, nested arrays included, as JSON: unsigned and signed integers keep
  // their signedness, float32 values are widened exactly to double.
  absl::StatusOr<nlohmann::json> GetJson(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const;
  const TensorInfo* FindTensor(std::string_view name) const;
  // Dequantizes a tensor (F32, F16, BF16, Q8_0, Q4_0, Q4_1) into float32, row-major in ggml order;
  // Unimplemented (naming the tensor and its type) for other types. Large tensors are
  // converted on several OpenMP threads.
  absl::Status ReadTensor(const TensorInfo& info, std::vector<float>* out) const;
  // Raw bytes of a tensor (info.bytes long, no alignment promised beyond alignment()),
  // for quantized compute later; valid while this File lives. Both calls look the
  // tensor up by info.name in this file (NotFound for a tensor it does not hold).
  absl::StatusOr<const uint8_t*> TensorData(const TensorInfo& info) const;
  // DataLoss when the file was truncated after it was opened and a read met the lost part
  // (it read zeros: engine/model/mapped_file.h); readers of metadata check it when done.
  absl::Status CheckIntact() const;

 private:
  struct Impl;
  explicit File(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace medusa::gguf
