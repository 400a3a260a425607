#include "engine/model/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/json_reader.h"
#include "engine/model/dequant.h"
#include "engine/model/mapped_file.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa::gguf {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader decodes little-endian files by direct loads");

namespace {

constexpr uint32_t kMagic = 0x46554747u;  // the bytes "GGUF" read as a little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
// Limits that no real file comes near; they bound what a corrupt length can make us
// allocate or walk (on top of every length being checked against the file size).
constexpr uint64_t kMaxKeyBytes = 65535;                   // the spec's limit
constexpr uint64_t kMaxStringBytes = uint64_t{16} << 20;   // chat templates are a few KB
constexpr uint64_t kMaxTensorNameBytes = 256;              // ggml itself uses 64
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 24;  // vocabularies are ~10^5
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr uint32_t kLastValueType = static_cast<uint32_t>(ValueType::kFloat64);

// Size of a fixed-size value; 0 for strings and arrays.
uint64_t ScalarSize(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

// The fewest bytes one array element of `type` can occupy (a string's length field,
// an array's type and count), to reject impossible counts before walking them.
uint64_t MinElementSize(ValueType type) {
  if (type == ValueType::kString) return 8;
  if (type == ValueType::kArray) return 12;
  return ScalarSize(type);
}

bool IsInteger(ValueType t) {
  return t == ValueType::kUint8 || t == ValueType::kInt8 || t == ValueType::kUint16 ||
         t == ValueType::kInt16 || t == ValueType::kUint32 || t == ValueType::kInt32 ||
         t == ValueType::kUint64 || t == ValueType::kInt64;
}
bool IsFloat(ValueType t) { return t == ValueType::kFloat32 || t == ValueType::kFloat64; }

// Prepends context to an error, keeping its code.
absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

// Reads little-endian values from [data, data + size); every access is bounds-checked.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, uint64_t pos) : data_(data), size_(size), pos_(pos) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n <= remaining()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("file truncated in ", what, ": needs ", n,
                                                   " bytes at offset ", pos_, " but only ",
                                                   remaining(), " remain (file size ", size_, ")"));
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }

  // A GGUF string: uint64 length, then that many bytes (not NUL-terminated).
  absl::StatusOr<absl::string_view> ReadString(absl::string_view what, uint64_t max_bytes) {
    const uint64_t at = pos_;
    ASSIGN_OR_RETURN(uint64_t length, Read<uint64_t>(what));
    if (length > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " length ", length, " at offset ", at, " exceeds the limit of ", max_bytes, " bytes"));
    }
    if (length > remaining()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " length ", length, " at offset ", at,
                                                     " runs past the end of the file (", remaining(),
                                                     " bytes remain)"));
    }
    absl::string_view out(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return out;
  }

  absl::StatusOr<ValueType> ReadValueType(absl::string_view what) {
    ASSIGN_OR_RETURN(uint32_t raw, Read<uint32_t>(what));
    if (raw > kLastValueType) {
      return absl::InvalidArgumentError(absl::StrCat("unknown value type ", raw, " at offset ", pos_ - 4));
    }
    return static_cast<ValueType>(raw);
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_;
};

struct ArrayHeader {
  ValueType element_type;
  uint64_t count;
};

// Reads an array's element type and count and checks the count is possible for
// the bytes left in the file.
absl::StatusOr<ArrayHeader> ReadArrayHeader(Cursor& cursor) {
  ASSIGN_OR_RETURN(ValueType element_type, cursor.ReadValueType("array element type"));
  const uint64_t at = cursor.pos();
  ASSIGN_OR_RETURN(uint64_t count, cursor.Read<uint64_t>("array length"));
  if (count > kMaxArrayElements) {
    return absl::InvalidArgumentError(
        absl::StrCat("array length ", count, " at offset ", at, " exceeds the limit of ", kMaxArrayElements));
  }
  const uint64_t min_bytes = count * MinElementSize(element_type);  // < 2^28: no overflow
  if (min_bytes > cursor.remaining()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "array of ", count, " ", ValueTypeName(element_type), " elements at offset ", at,
        " runs past the end of the file (needs at least ", min_bytes, " bytes, ", cursor.remaining(), " remain)"));
  }
  return ArrayHeader{element_type, count};
}

// Walks over one value, checking every length against the file.
absl::Status SkipValue(Cursor& cursor, ValueType type, int depth) {
  if (type == ValueType::kString) return cursor.ReadString("string", kMaxStringBytes).status();
  if (type != ValueType::kArray) return cursor.Skip(ScalarSize(type), ValueTypeName(type));
  if (depth >= kMaxArrayDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("arrays nested deeper than ", kMaxArrayDepth, " levels"));
  }
  ASSIGN_OR_RETURN(ArrayHeader header, ReadArrayHeader(cursor));
  if (const uint64_t size = ScalarSize(header.element_type); size != 0) {
    return cursor.Skip(header.count * size, "array data");
  }
  for (uint64_t i = 0; i < header.count; ++i) {
    if (absl::Status s = SkipValue(cursor, header.element_type, depth + 1); !s.ok()) {
      return Annotate(s, absl::StrCat("array element ", i));
    }
  }
  return absl::OkStatus();
}

// One decoded scalar, wide enough for every GGUF scalar type.
struct Scalar {
  enum class Kind { kUnsigned, kSigned, kFloat, kBool } kind;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
};

template <typename T>
absl::StatusOr<Scalar> ReadAs(Cursor& cursor, Scalar::Kind kind, absl::string_view what) {
  ASSIGN_OR_RETURN(T v, cursor.Read<T>(what));
  Scalar s{kind};
  if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, uint8_t>) {
    if (kind == Scalar::Kind::kBool) {
      s.b = (v != 0);
      return s;
    }
  }
  if constexpr (std::is_floating_point_v<T>) {
    s.f = v;
  } else if constexpr (std::is_signed_v<T>) {
    s.i = v;
  } else {
    s.u = v;
  }
  return s;
}

absl::StatusOr<Scalar> ReadScalar(Cursor& cursor, ValueType type) {
  using K = Scalar::Kind;
  const absl::string_view what = ValueTypeName(type);
  switch (type) {
    case ValueType::kUint8:
      return ReadAs<uint8_t>(cursor, K::kUnsigned, what);
    case ValueType::kInt8:
      return ReadAs<int8_t>(cursor, K::kSigned, what);
    case ValueType::kUint16:
      return ReadAs<uint16_t>(cursor, K::kUnsigned, what);
    case ValueType::kInt16:
      return ReadAs<int16_t>(cursor, K::kSigned, what);
    case ValueType::kUint32:
      return ReadAs<uint32_t>(cursor, K::kUnsigned, what);
    case ValueType::kInt32:
      return ReadAs<int32_t>(cursor, K::kSigned, what);
    case ValueType::kUint64:
      return ReadAs<uint64_t>(cursor, K::kUnsigned, what);
    case ValueType::kInt64:
      return ReadAs<int64_t>(cursor, K::kSigned, what);
    case ValueType::kFloat32:
      return ReadAs<float>(cursor, K::kFloat, what);
    case ValueType::kFloat64:
      return ReadAs<double>(cursor, K::kFloat, what);
    case ValueType::kBool:
      return ReadAs<uint8_t>(cursor, K::kBool, what);
    case ValueType::kString:
    case ValueType::kArray:
      break;
  }
  return absl::InternalError(absl::StrCat(what, " is not a scalar type"));
}

absl::StatusOr<nlohmann::json> ToJson(Cursor& cursor, ValueType type, int depth) {
  if (type == ValueType::kString) {
    ASSIGN_OR_RETURN(absl::string_view s, cursor.ReadString("string", kMaxStringBytes));
    return nlohmann::json(std::string(s));
  }
  if (type == ValueType::kArray) {
    if (depth >= kMaxArrayDepth) return absl::InvalidArgumentError("arrays nested too deep");
    ASSIGN_OR_RETURN(ArrayHeader header, ReadArrayHeader(cursor));
    nlohmann::json out = nlohmann::json::array();
    for (uint64_t i = 0; i < header.count; ++i) {
      ASSIGN_OR_RETURN(nlohmann::json item, ToJson(cursor, header.element_type, depth + 1));
      out.push_back(std::move(item));
    }
    return out;
  }
  ASSIGN_OR_RETURN(Scalar s, ReadScalar(cursor, type));
  switch (s.kind) {
    case Scalar::Kind::kUnsigned:
      return nlohmann::json(s.u);
    case Scalar::Kind::kSigned:
      return nlohmann::json(s.i);
    case Scalar::Kind::kFloat:
      return nlohmann::json(s.f);
    case Scalar::Kind::kBool:
      return nlohmann::json(s.b);
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<int64_t> ScalarToInt(const Scalar& s, absl::string_view key) {
  if (s.kind == Scalar::Kind::kSigned) return s.i;
  if (s.kind == Scalar::Kind::kUnsigned) {
    if (s.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat("metadata key '", key, "' value ", s.u, " does not fit in int64"));
    }
    return static_cast<int64_t>(s.u);
  }
  return absl::InternalError("not an integer");
}

double ScalarToDouble(const Scalar& s) {
  switch (s.kind) {
    case Scalar::Kind::kUnsigned:
      return static_cast<double>(s.u);
    case Scalar::Kind::kSigned:
      return static_cast<double>(s.i);
    case Scalar::Kind::kFloat:
      return s.f;
    case Scalar::Kind::kBool:
      return s.b ? 1.0 : 0.0;
  }
  return 0.0;
}

bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

}  // namespace

const char* ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kUint8:
      return "uint8";
    case ValueType::kInt8:
      return "int8";
    case ValueType::kUint16:
      return "uint16";
    case ValueType::kInt16:
      return "int16";
    case ValueType::kUint32:
      return "uint32";
    case ValueType::kInt32:
      return "int32";
    case ValueType::kFloat32:
      return "float32";
    case ValueType::kBool:
      return "bool";
    case ValueType::kString:
      return "string";
    case ValueType::kArray:
      return "array";
    case ValueType::kUint64:
      return "uint64";
    case ValueType::kInt64:
      return "int64";
    case ValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

struct File::Impl {
  struct Entry {
    ValueType type;
    uint64_t offset;  // of the value's bytes (for arrays: of the element type)
  };

  std::unique_ptr<MappedFile> map;
  uint32_t version = 0;
  uint64_t alignment = kDefaultAlignment;
  uint64_t data_start = 0;
  std::vector<std::string> keys;
  absl::flat_hash_map<std::string, Entry> metadata;
  std::vector<TensorInfo> tensors;
  absl::flat_hash_map<std::string, size_t> tensor_index;

  const std::string& path() const { return map->path(); }
  Cursor At(uint64_t offset) const { return Cursor(map->data(), map->size(), offset); }

  absl::Status Error(absl::StatusCode code, absl::string_view message) const {
    return absl::Status(code, absl::StrCat("GGUF file '", path(), "': ", message));
  }
  absl::Status Invalid(absl::string_view message) const {
    return Error(absl::StatusCode::kInvalidArgument, message);
  }
  absl::Status WithPath(const absl::Status& s) const {
    return s.ok() ? s : Error(s.code(), s.message());
  }

  absl::Status ReadHeader(Cursor& cursor, uint64_t* tensor_count, uint64_t* kv_count);
  absl::Status ReadMetadata(Cursor& cursor, uint64_t kv_count);
  absl::Status ReadAlignment();
  // Errors come without the path; the caller adds it and the info's index.
  absl::Status ReadTensorInfo(Cursor& cursor);
  absl::Status CheckTensorRanges();
  absl::Status CheckTensorLayout();

  // Finds a key and checks its type with `accepts`; `expected` names what was wanted.
  absl::StatusOr<Entry> Lookup(absl::string_view key, bool (*accepts)(ValueType),
                               absl::string_view expected) const;
  absl::StatusOr<ArrayHeader> LookupArray(absl::string_view key, Cursor& cursor,
                                          bool (*accepts)(ValueType),
                                          absl::string_view expected) const;
};

absl::Status File::Impl::ReadHeader(Cursor& cursor, uint64_t* tensor_count, uint64_t* kv_count) {
  absl::StatusOr<uint32_t> magic = cursor.Read<uint32_t>("header (magic)");
  if (!magic.ok()) return WithPath(magic.status());
  if (*magic != kMagic) {
    std::string bytes(reinterpret_cast<const char*>(&*magic), 4);
    return Invalid(absl::StrCat("not a GGUF file: magic bytes are \"", absl::CHexEscape(bytes),
                                "\", expected \"GGUF\""));
  }
  absl::StatusOr<uint32_t> version = cursor.Read<uint32_t>("header (version)");
  if (!version.ok()) return WithPath(version.status());
  if (*version == 1) {
    return Error(absl::StatusCode::kUnimplemented,
                 "GGUF version 1 is not supported (this reader reads versions 2 and 3)");
  }
  if ((*version & 0xffffu) == 0 && (*version >> 16) != 0) {
    return Error(absl::StatusCode::kUnimplemented,
                 absl::StrCat("big-endian GGUF files are not supported (version field ", *version,
                              " read as little-endian)"));
  }
  if (*version != 2 && *version != 3) {
    return Error(absl::StatusCode::kUnimplemented,
                 absl::StrCat("unsupported GGUF version ", *version, " (supported: 2 and 3)"));
  }
  this->version = *version;
  absl::StatusOr<uint64_t> tensors = cursor.Read<uint64_t>("header (tensor count)");
  if (!tensors.ok()) return WithPath(tensors.status());
  absl::StatusOr<uint64_t> kvs = cursor.Read<uint64_t>("header (metadata count)");
  if (!kvs.ok()) return WithPath(kvs.status());
  *tensor_count = *tensors;
  *kv_count = *kvs;
  return absl::OkStatus();
}

absl::Status File::Impl::ReadMetadata(Cursor& cursor, uint64_t kv_count) {
  // Counts are not trusted: a corrupt one fails when the bytes run out, and sizes
  // reservations by what the file could hold (a pair takes at least 13 bytes).
  keys.reserve(std::min(kv_count, cursor.remaining() / 13));
  for (uint64_t i = 0; i < kv_count; ++i) {
    absl::StatusOr<absl::string_view> key = cursor.ReadString("metadata key", kMaxKeyBytes);
    if (!key.ok()) {
      return WithPath(
          Annotate(key.status(), absl::StrCat("metadata entry #", i, " (of ", kv_count, ")")));
    }
    const std::string context =
        absl::StrCat("metadata key '", TextSnippet(std::string_view(key->data(), key->size())), "'");
    absl::StatusOr<ValueType> type = cursor.ReadValueType("value type");
    if (!type.ok()) return WithPath(Annotate(type.status(), context));
    const uint64_t offset = cursor.pos();
    if (absl::Status s = SkipValue(cursor, *type, 0); !s.ok()) {
      return WithPath(Annotate(s, context));
    }
    if (!metadata.try_emplace(*key, Entry{*type, offset}).second) {
      return Invalid(
          absl::StrCat("duplicate metadata key '", TextSnippet(std::string_view(key->data(), key->size())), "'"));
    }
    keys.emplace_back(*key);
  }
  return absl::OkStatus();
}

absl::Status File::Impl::ReadAlignment() {
  auto it = metadata.find("general.alignment");
  if (it == metadata.end()) return absl::OkStatus();
  if (!IsInteger(it->second.type)) {
    return Invalid(absl::StrCat("general.alignment has type ", ValueTypeName(it->second.type),
                                ", expected an integer"));
  }
  Cursor cursor = At(it->second.offset);
  absl::StatusOr<Scalar> s = ReadScalar(cursor, it->second.type);
  if (!s.ok()) return WithPath(s.status());
  const bool negative = s->kind == Scalar::Kind::kSigned && s->i < 0;
  const uint64_t value = s->kind == Scalar::Kind::kSigned ? static_cast<uint64_t>(s->i) : s->u;
  if (negative || value == 0 || value > kMaxAlignment || (value & (value - 1)) != 0) {
    return Invalid(
        absl::StrCat("general.alignment = ", negative ? s->i : static_cast<int64_t>(value),
                     " is not a power of two between 1 and ", kMaxAlignment));
  }
  alignment = value;
  return absl::OkStatus();
}

absl::Status File::Impl::ReadTensorInfo(Cursor& cursor) {
  ASSIGN_OR_RETURN(absl::string_view name, cursor.ReadString("tensor name", kMaxTensorNameBytes));
  const std::string context = absl::StrCat("tensor '", name, "'");
  TensorInfo info;
  info.name = std::string(name);

  absl::StatusOr<uint32_t> n_dims = cursor.Read<uint32_t>("tensor dimension count");
  if (!n_dims.ok()) return Annotate(n_dims.status(), context);
  if (*n_dims == 0 || *n_dims > kMaxDims) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, " has ", *n_dims, " dimensions (expected 1 to ", kMaxDims, ")"));
  }
  uint64_t elements = 1;
  for (uint32_t d = 0; d < *n_dims; ++d) {
    absl::StatusOr<int64_t> dim = cursor.Read<int64_t>("tensor dimension");
    if (!dim.ok()) return Annotate(dim.status(), context);
    if (*dim < 0)
      return absl::InvalidArgumentError(
          absl::StrCat(context, " dimension ", d, " is negative (", *dim, ")"));
    if (!CheckedMul(elements, static_cast<uint64_t>(*dim), &elements) ||
        elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrCat(context, " element count overflows"));
    }
    info.dims.push_back(*dim);
  }

  absl::StatusOr<uint32_t> type = cursor.Read<uint32_t>("tensor type");
  if (!type.ok()) return Annotate(type.status(), context);
  info.type = *type;
  const GgmlTypeTraits* traits = FindGgmlType(*type);
  if (traits == nullptr) {
    return absl::UnimplementedError(absl::StrCat(context, " has unknown ggml type ", *type));
  }
  if (info.dims[0] % traits->block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(context, " row length ", info.dims[0],
                                                   " is not a multiple of the ", traits->name,
                                                   " block size ", traits->block_size));
  }
  // 8-byte types (F64, I64) could overflow 2^64 even with elements < 2^63.
  if (!CheckedMul(elements / traits->block_size, traits->type_size, &info.bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(context, " byte size overflows"));
  }

  absl::StatusOr<uint64_t> offset = cursor.Read<uint64_t>("tensor data offset");
  if (!offset.ok()) return Annotate(offset.status(), context);
  info.offset = *offset;
  if (info.offset % alignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, " data offset ", info.offset, " is not a multiple of the alignment ", alignment));
  }
  if (!tensor_index.try_emplace(info.name, tensors.size()).second) {
    return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name '", info.name, "'"));
  }
  tensors.push_back(std::move(info));
  return absl::OkStatus();
}

absl::Status File::Impl::CheckTensorRanges() {
  const uint64_t size = map->size();
  for (const TensorInfo& t : tensors) {
    if (data_start > size || t.offset > size - data_start) {
      return Invalid(absl::StrCat("tensor '", t.name, "' data offset ", t.offset, " (absolute ",
                                  data_start + t.offset, ") is past the end of the file (size ",
                                  size, ")"));
    }
    const uint64_t begin = data_start + t.offset;
    if (t.bytes > size - begin) {
      return Invalid(absl::StrCat("tensor '", t.name, "' data is truncated: ", GgmlTypeName(t.type),
                                  " [", absl::StrJoin(t.dims, ", "), "] needs ", t.bytes,
                                  " bytes at offset ", begin, " but only ", size - begin,
                                  " remain"));
    }
  }
  return absl::OkStatus();
}

// As ggml's own reader (ggml/src/gguf.cpp) requires: tensors lie in the order of their infos,
// the first at offset 0 and each at the previous one's offset plus its size rounded up to the
// alignment. So no two tensors share bytes (a file whose layers all point at one block would
// otherwise be converted to float32 once per layer), and the sum cannot overflow.
absl::Status File::Impl::CheckTensorLayout() {
  uint64_t expected = 0;
  for (const TensorInfo& t : tensors) {
    if (t.offset != expected) {
      return Invalid(absl::StrCat("tensor '", t.name, "' has data offset ", t.offset, ", expected ", expected,
                                  " (tensors must follow each other in order, each padded to the alignment ", alignment,
                                  ", as ggml requires; overlapping or out-of-order data is refused)"));
    }
    uint64_t padded = t.bytes / alignment * alignment;
    if ((t.bytes % alignment != 0 && !CheckedAdd(padded, alignment, &padded)) ||
        !CheckedAdd(expected, padded, &expected)) {
      return Invalid(absl::StrCat("tensor '", t.name, "': the data section size overflows"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<File>> File::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> map, MappedFile::Open(path));
  auto impl = std::make_unique<Impl>();
  impl->map = std::move(map);
  Cursor cursor = impl->At(0);

  uint64_t tensor_count = 0, kv_count = 0;
  RETURN_IF_ERROR(impl->ReadHeader(cursor, &tensor_count, &kv_count));
  RETURN_IF_ERROR(impl->ReadMetadata(cursor, kv_count));
  RETURN_IF_ERROR(impl->ReadAlignment());
  // A tensor info takes at least 32 bytes.
  impl->tensors.reserve(std::min(tensor_count, cursor.remaining() / 32));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    if (absl::Status s = impl->ReadTensorInfo(cursor); !s.ok()) {
      return impl->WithPath(
          Annotate(s, absl::StrCat("tensor info #", i, " (of ", tensor_count, ")")));
    }
  }
  // The data section starts at the next multiple of the alignment after the header.
  impl->data_start = (cursor.pos() + impl->alignment - 1) / impl->alignment * impl->alignment;
  RETURN_IF_ERROR(impl->CheckTensorRanges());
  RETURN_IF_ERROR(impl->CheckTensorLayout());
  RETURN_IF_ERROR(impl->map->CheckIntact());
  return std::unique_ptr<File>(new File(std::move(impl)));
}

File::File(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
File::~File() = default;

uint32_t File::version() const { return impl_->version; }
uint64_t File::alignment() const { return impl_->alignment; }

bool File::Has(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  return impl_->metadata.contains(key);
}

ValueType File::TypeOf(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  auto it = impl_->metadata.find(key);
  // Outside the precondition: a value no real type has.
  if (it == impl_->metadata.end()) return static_cast<ValueType>(~uint32_t{0});
  return it->second.type;
}

std::vector<std::string> File::Keys() const { return impl_->keys; }

absl::StatusOr<File::Impl::Entry> File::Impl::Lookup(absl::string_view key,
                                                     bool (*accepts)(ValueType),
                                                     absl::string_view expected) const {
  auto it = metadata.find(key);
  if (it == metadata.end()) {
    return Error(absl::StatusCode::kNotFound, absl::StrCat("no metadata key '", key, "'"));
  }
  if (!accepts(it->second.type)) {
    return Invalid(absl::StrCat("metadata key '", key, "' has type ",
                                ValueTypeName(it->second.type), ", expected ", expected));
  }
  return it->second;
}

absl::StatusOr<ArrayHeader> File::Impl::LookupArray(absl::string_view key, Cursor& cursor,
                                                    bool (*accepts)(ValueType),
                                                    absl::string_view expected) const {
  ASSIGN_OR_RETURN(Entry entry, Lookup(
                                    key, [](ValueType t) { return t == ValueType::kArray; }, "an array"));
  cursor = At(entry.offset);
  absl::StatusOr<ArrayHeader> header = ReadArrayHeader(cursor);
  if (!header.ok()) return WithPath(Annotate(header.status(), key));
  if (!accepts(header->element_type)) {
    return Invalid(absl::StrCat("metadata key '", key, "' is an array of ", ValueTypeName(header->element_type),
                                ", expected an array of ", expected));
  }
  return header;
}

absl::StatusOr<int64_t> File::GetInt(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  ASSIGN_OR_RETURN(Impl::Entry entry, impl_->Lookup(key, IsInteger, "an integer"));
  Cursor cursor = impl_->At(entry.offset);
  absl::StatusOr<Scalar> s = ReadScalar(cursor, entry.type);
  if (!s.ok()) return impl_->WithPath(s.status());
  absl::StatusOr<int64_t> v = ScalarToInt(*s, key);
  return v.ok() ? v : impl_->WithPath(v.status());
}

absl::StatusOr<double> File::GetFloat(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  ASSIGN_OR_RETURN(Impl::Entry entry, impl_->Lookup(
                                          key, [](ValueType t) { return IsFloat(t) || IsInteger(t); }, "a number"));
  Cursor cursor = impl_->At(entry.offset);
  absl::StatusOr<Scalar> s = ReadScalar(cursor, entry.type);
  if (!s.ok()) return impl_->WithPath(s.status());
  return ScalarToDouble(*s);
}

absl::StatusOr<bool> File::GetBool(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  ASSIGN_OR_RETURN(Impl::Entry entry, impl_->Lookup(
                                          key, [](ValueType t) { return t == ValueType::kBool; }, "a bool"));
  Cursor cursor = impl_->At(entry.offset);
  absl::StatusOr<Scalar> s = ReadScalar(cursor, entry.type);
  if (!s.ok()) return impl_->WithPath(s.status());
  return s->b;
}

absl::StatusOr<std::string> File::GetString(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  ASSIGN_OR_RETURN(Impl::Entry entry, impl_->Lookup(
                                          key, [](ValueType t) { return t == ValueType::kString; }, "a string"));
  Cursor cursor = impl_->At(entry.offset);
  absl::StatusOr<absl::string_view> s = cursor.ReadString("string", kMaxStringBytes);
  if (!s.ok()) return impl_->WithPath(s.status());
  return std::string(*s);
}

absl::StatusOr<std::vector<std::string>> File::GetStringArray(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  Cursor cursor = impl_->At(0);
  ASSIGN_OR_RETURN(ArrayHeader header,
                   impl_->LookupArray(
                       key, cursor, [](ValueType t) { return t == ValueType::kString; }, "strings"));
  std::vector<std::string> out;
  out.reserve(header.count);
  for (uint64_t i = 0; i < header.count; ++i) {
    absl::StatusOr<absl::string_view> s = cursor.ReadString("string", kMaxStringBytes);
    if (!s.ok()) return impl_->WithPath(s.status());
    out.emplace_back(*s);
  }
  return out;
}

absl::StatusOr<std::vector<double>> File::GetFloatArray(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  Cursor cursor = impl_->At(0);
  ASSIGN_OR_RETURN(ArrayHeader header,
                   impl_->LookupArray(
                       key, cursor, [](ValueType t) { return IsFloat(t) || IsInteger(t); }, "numbers"));
  std::vector<double> out;
  out.reserve(header.count);
  for (uint64_t i = 0; i < header.count; ++i) {
    absl::StatusOr<Scalar> s = ReadScalar(cursor, header.element_type);
    if (!s.ok()) return impl_->WithPath(s.status());
    out.push_back(ScalarToDouble(*s));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> File::GetIntArray(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  Cursor cursor = impl_->At(0);
  ASSIGN_OR_RETURN(ArrayHeader header, impl_->LookupArray(key, cursor, IsInteger, "integers"));
  std::vector<int64_t> out;
  out.reserve(header.count);
  for (uint64_t i = 0; i < header.count; ++i) {
    absl::StatusOr<Scalar> s = ReadScalar(cursor, header.element_type);
    if (!s.ok()) return impl_->WithPath(s.status());
    absl::StatusOr<int64_t> v = ScalarToInt(*s, key);
    if (!v.ok()) return impl_->WithPath(v.status());
    out.push_back(*v);
  }
  return out;
}

absl::StatusOr<uint64_t> File::ArrayLength(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  Cursor cursor = impl_->At(0);
  ASSIGN_OR_RETURN(ArrayHeader header, impl_->LookupArray(
                                           key, cursor, [](ValueType) { return true; }, "anything"));
  return header.count;
}

absl::StatusOr<nlohmann::json> File::GetJson(std::string_view key_in) const {
  const absl::string_view key(key_in.data(), key_in.size());
  ASSIGN_OR_RETURN(Impl::Entry entry, impl_->Lookup(
                                          key, [](ValueType) { return true; }, "anything"));
  Cursor cursor = impl_->At(entry.offset);
  absl::StatusOr<nlohmann::json> out = ToJson(cursor, entry.type, 0);
  if (!out.ok()) return impl_->WithPath(Annotate(out.status(), key));
  return out;
}

const std::vector<TensorInfo>& File::tensors() const { return impl_->tensors; }

const TensorInfo* File::FindTensor(std::string_view name_in) const {
  const absl::string_view name(name_in.data(), name_in.size());
  auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

absl::StatusOr<const uint8_t*> File::TensorData(const TensorInfo& info) const {
  // Use this file's own record (validated at Open), not the caller's copy.
  const TensorInfo* own = FindTensor(info.name);
  if (own == nullptr) {
    return impl_->Error(absl::StatusCode::kNotFound,
                        absl::StrCat("no tensor named '", info.name, "'"));
  }
  return impl_->map->data() + impl_->data_start + own->offset;
}

absl::Status File::ReadTensor(const TensorInfo& info, std::vector<float>* out) const {
  ASSIGN_OR_RETURN(const uint8_t* data, TensorData(info));
  const TensorInfo& own = *FindTensor(info.name);
  if (!CanDequantize(own.type)) {
    return impl_->Error(absl::StatusCode::kUnimplemented,
                        absl::StrCat("tensor '", own.name, "' has type ", GgmlTypeName(own.type),
                                     ", which cannot be converted to float32 (supported: F32, "
                                     "F16, BF16, Q8_0, Q4_0, Q4_1)"));
  }
  const int64_t count = own.num_elements();
  out->resize(static_cast<size_t>(count));
  Dequantize(own.type, data, count, out->data());
  return CheckIntact();  // truncated meanwhile: the values read are zeros
}

absl::Status File::CheckIntact() const { return impl_->map->CheckIntact(); }

}  // namespace medusa::gguf
