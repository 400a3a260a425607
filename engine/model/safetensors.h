#pragma once
// Safetensors reader and writer (the Hugging Face format: an 8-byte little-endian
// header length N, N bytes of JSON describing every tensor, then the raw data).
// Spec: https://github.com/huggingface/safetensors#format
//
// The reader memory-maps the file and validates the header as the reference crate
// (huggingface/safetensors, tensor.rs) does when it opens it: a header of at most 100 MB,
// JSON nested at most 64 levels, `__metadata__` a map of strings, known dtypes only, tensors
// that sorted by offset are contiguous from 0 and cover the data section exactly (no gaps,
// no overlaps, no trailing bytes), and each shape's size times its dtype's equal to its
// bytes (overflow checked). A corrupt file gives a clear InvalidArgument and never a read
// out of bounds. It is shared by the Medusa heads loader and the Hugging Face checkpoint
// loader, so it keeps every dtype the format defines (a tensor of a dtype it cannot convert
// is rejected only when it is read).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa::safetensors {

// Element types of the format (the reference crate's, sub-byte floats included). kOther is
// any other name: a file holding one does not open, as with the reference crate.
enum class DType {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kI64,
  kU64,
  kF64,
  kF8E8M0,
  kF4,
  kF6E2M3,
  kF6E3M2,
  kC64,
  kOther
};

// The format's name ("F32", "BF16", ...); "other" for kOther.
const char* DTypeName(DType dtype);
// Bytes per element; 0 for kOther and the sub-byte types (F4, F6_*).
int DTypeSize(DType dtype);
// Bits per element; 0 for kOther.
int DTypeBits(DType dtype);
// Parses a dtype name; kOther for unknown names.
DType ParseDType(std::string_view name);
// Whether ReadTensor can convert this dtype to float32 (F32, F16, BF16).
bool CanReadAsFloat(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kOther;
  std::string dtype_name;      // as written in the file
  std::vector<int64_t> shape;  // row-major, outermost first (PyTorch order); {} for a scalar
  uint64_t begin = 0;          // byte offsets relative to the start of the data section
  uint64_t end = 0;
  uint64_t bytes() const { return end - begin; }
  int64_t num_elements() const;  // product of shape (1 for a scalar)
};

// Errors: NotFound for a missing file; InvalidArgument (naming the file, the tensor
// and what was expected) for a malformed or truncated file; Unimplemented when
// reading a tensor whose dtype cannot be converted to float32.
class File {
 public:
  // Reads and validates the header. Tensor data is read lazily (memory-mapped).
  static absl::StatusOr<std::unique_ptr<File>> Open(const std::string& path);
  ~File();

  const std::string& path() const;
  // Tensors in header order.
  const std::vector<TensorInfo>& tensors() const;
  const TensorInfo* FindTensor(std::string_view name) const;  // nullptr when absent
  // The header's "__metadata__" object (string to string by the spec); an empty
  // object when the file has none.
  const nlohmann::json& metadata() const;
  // Byte offset of the data section in the file (8 + header length).
  uint64_t data_offset() const;

  // The tensor's values as float32, row-major. NotFound for an unknown name;
  // Unimplemented (naming the tensor and its dtype) for dtypes other than F32, F16, BF16.
  absl::Status ReadTensor(std::string_view name, std::vector<float>* out) const;
  absl::StatusOr<std::vector<float>> ReadTensor(std::string_view name) const;
  // The tensor's raw bytes (no alignment promised), valid while this File lives.
  absl::StatusOr<absl::Span<const uint8_t>> TensorData(std::string_view name) const;
  // DataLoss when the file was truncated after it was opened and a read met the lost part
  // (ReadTensor checks it itself; readers of TensorData's bytes check it when done).
  absl::Status CheckIntact() const;

 private:
  struct Impl;
  explicit File(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ------------------------------------------------------------------ writing

// One tensor to write, from float32 values converted to `dtype` (F32, F16 or BF16;
// F16 and BF16 round to nearest even).
struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  absl::Span<const float> values;  // product(shape) values, row-major
  DType dtype = DType::kF32;
};

// Writes a safetensors file: tensors laid out in the given order, the header padded
// with spaces to a multiple of 8 bytes (as the reference writer does, so F32 data
// is 4-byte aligned in the file). `metadata` must be a JSON object (or null);
// string values are stored as they are, other values as their JSON text (the spec
// allows only strings). InvalidArgument for duplicate or empty names, a value count
// that does not match the shape, an unsupported dtype or a bad metadata value;
// an error naming the path when the file cannot be written. The file appears whole or
// not at all (it is written beside `path` and renamed).
absl::Status WriteFile(const std::string& path, absl::Span<const TensorToWrite> tensors,
                       const nlohmann::json& metadata);

// float32 to IEEE binary16 / bfloat16 bits, rounding to nearest even (NaN stays NaN,
// overflow gives infinity).
uint16_t FloatToHalf(float value);
uint16_t FloatToBFloat16(float value);

}  // namespace medusa::safetensors
