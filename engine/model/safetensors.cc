#include "engine/model/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/io/json_reader.h"
#include "engine/model/dequant.h"
#include "engine/model/mapped_file.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa::safetensors {

static_assert(std::endian::native == std::endian::little,
              "the safetensors reader decodes little-endian files by direct loads");

namespace {

// The reference implementation refuses headers over 100 MB; so do we (a corrupt
// length must not make us parse gigabytes).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr size_t kMaxDims = 16;
constexpr char kMetadataKey[] = "__metadata__";

// ggml type ids of the float types, to reuse gguf::Dequantize.
constexpr uint32_t kGgmlF32 = 0;
constexpr uint32_t kGgmlF16 = 1;
constexpr uint32_t kGgmlBF16 = 30;

struct DTypeEntry {
  DType dtype;
  const char* name;
  int bits;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::kBool, "BOOL", 8},      {DType::kU8, "U8", 8},          {DType::kI8, "I8", 8},
    {DType::kF8E5M2, "F8_E5M2", 8}, {DType::kF8E4M3, "F8_E4M3", 8}, {DType::kI16, "I16", 16},
    {DType::kU16, "U16", 16},       {DType::kF16, "F16", 16},       {DType::kBF16, "BF16", 16},
    {DType::kI32, "I32", 32},       {DType::kU32, "U32", 32},       {DType::kF32, "F32", 32},
    {DType::kI64, "I64", 64},       {DType::kU64, "U64", 64},       {DType::kF64, "F64", 64},
    {DType::kF8E8M0, "F8_E8M0", 8}, {DType::kF4, "F4", 4},          {DType::kF6E2M3, "F6_E2M3", 6},
    {DType::kF6E3M2, "F6_E3M2", 6}, {DType::kC64, "C64", 64},
};

const DTypeEntry* FindDType(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return &e;
  }
  return nullptr;
}

// Product of the dims, or nullopt-like -1 when it overflows int64.
int64_t CheckedProduct(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

const char* DTypeName(DType dtype) {
  const DTypeEntry* e = FindDType(dtype);
  return e != nullptr ? e->name : "other";
}

int DTypeBits(DType dtype) {
  const DTypeEntry* e = FindDType(dtype);
  return e != nullptr ? e->bits : 0;
}

int DTypeSize(DType dtype) { return DTypeBits(dtype) % 8 == 0 ? DTypeBits(dtype) / 8 : 0; }

DType ParseDType(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return DType::kOther;
}

bool CanReadAsFloat(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

int64_t TensorInfo::num_elements() const { return CheckedProduct(shape); }

// ------------------------------------------------------------------ reader

struct File::Impl {
  std::unique_ptr<MappedFile> map;
  uint64_t data_start = 0;
  uint64_t data_size = 0;
  std::vector<TensorInfo> tensors;
  absl::flat_hash_map<std::string, size_t> by_name;
  nlohmann::json metadata = nlohmann::json::object();

  absl::Status Invalid(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file '", map->path(), "': ", what));
  }
  absl::Status ParseHeader(std::string_view header_text);
  absl::Status ParseMetadata(const nlohmann::ordered_json& value);
  absl::Status ParseTensor(const std::string& name, const nlohmann::ordered_json& entry);
  absl::Status CheckSize(const TensorInfo& info) const;
  absl::Status CheckLayout() const;
};

// The spec's `__metadata__` is a map of strings to strings; anything else is refused (as the
// reference crate refuses it), so that no reader of metadata() meets a nested value.
absl::Status File::Impl::ParseMetadata(const nlohmann::ordered_json& value) {
  if (!value.is_object()) return Invalid("'__metadata__' is not a JSON object");
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!it.value().is_string()) {
      return Invalid(absl::StrCat("'__metadata__' value of '", TextSnippet(it.key()),
                                  "' is not a string: ", JsonSnippet(it.value())));
    }
    metadata[it.key()] = it.value().get<std::string>();
  }
  return absl::OkStatus();
}

// Elements times bits per element must be whole bytes and exactly the tensor's bytes.
absl::Status File::Impl::CheckSize(const TensorInfo& info) const {
  const uint64_t count = static_cast<uint64_t>(info.num_elements());
  const uint64_t bits = static_cast<uint64_t>(DTypeBits(info.dtype));
  uint64_t total_bits = 0;
  if (__builtin_mul_overflow(count, bits, &total_bits)) {
    return Invalid(absl::StrCat("tensor '", info.name, "': shape ", ShapeString(info.shape), " of ", info.dtype_name,
                                " overflows"));
  }
  if (total_bits % 8 != 0 || total_bits / 8 != info.bytes()) {
    return Invalid(absl::StrCat("tensor '", info.name, "': shape ", ShapeString(info.shape), " of ", info.dtype_name,
                                " needs ", total_bits / 8.0, " bytes but data_offsets [", info.begin, ", ", info.end,
                                "] hold ", info.bytes()));
  }
  return absl::OkStatus();
}

absl::Status File::Impl::ParseTensor(const std::string& name,
                                     const nlohmann::ordered_json& entry) {
  const std::string quoted = TextSnippet(name);
  auto bad = [&](absl::string_view what) { return Invalid(absl::StrCat("tensor '", quoted, "': ", what)); };
  if (name.empty()) return Invalid("a tensor has an empty name");
  if (!entry.is_object()) return bad("its entry is not a JSON object");
  TensorInfo info;
  info.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) return bad("'dtype' is missing or not a string");
  info.dtype_name = dtype->get<std::string>();
  info.dtype = ParseDType(info.dtype_name);
  if (info.dtype == DType::kOther) {
    return bad(absl::StrCat("unknown dtype '", TextSnippet(info.dtype_name), "'"));
  }

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) return bad("'shape' is missing or not a list");
  if (shape->size() > kMaxDims) {
    return bad(absl::StrCat("'shape' has ", shape->size(), " dims (at most ", kMaxDims, ")"));
  }
  for (const nlohmann::ordered_json& d : *shape) {
    if (!d.is_number_unsigned()) {  // the parser gives non-negative integers unsigned
      return bad(absl::StrCat("'shape' ", JsonSnippet(*shape),
                              " holds a value that is not a "
                              "non-negative integer"));
    }
    uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return bad(absl::StrCat("'shape' dim ", v, " is too large"));
    }
    info.shape.push_back(static_cast<int64_t>(v));
  }
  if (CheckedProduct(info.shape) < 0) return bad(absl::StrCat("shape ", ShapeString(info.shape), " overflows"));

  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
    return bad("'data_offsets' must be a list of two non-negative integers");
  }
  info.begin = (*offsets)[0].get<uint64_t>();
  info.end = (*offsets)[1].get<uint64_t>();
  if (info.begin > info.end) {
    return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end, "] end before they begin"));
  }
  if (info.end > data_size) {
    return bad(absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                            "] run past the data section (", data_size,
                            " bytes; file truncated?)"));
  }
  RETURN_IF_ERROR(CheckSize(info));
  if (!by_name.emplace(name, tensors.size()).second) {
    return Invalid(absl::StrCat("tensor '", quoted, "' appears twice"));
  }
  tensors.push_back(std::move(info));
  return absl::OkStatus();
}

// As the reference crate: sorted by offsets, the tensors start at 0, each begins where the
// previous one ends (no gap, no overlap), and the last ends at the end of the file.
absl::Status File::Impl::CheckLayout() const {
  std::vector<const TensorInfo*> order;
  order.reserve(tensors.size());
  for (const TensorInfo& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::pair(a->begin, a->end) < std::pair(b->begin, b->end);
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : order) {
    if (t->begin != expected) {
      const std::string after = previous == nullptr ? std::string("the start of the data section")
                                                    : absl::StrCat("tensor '", TextSnippet(previous->name), "' [",
                                                                   previous->begin, ", ", previous->end, ")");
      return Invalid(absl::StrCat("tensor '", TextSnippet(t->name), "' [", t->begin, ", ", t->end, ") ",
                                  t->begin < expected ? "overlaps " : "leaves a gap after ", after,
                                  " (tensors must be contiguous, as the format requires)"));
    }
    expected = t->end;
    previous = t;
  }
  if (expected != data_size) {
    return Invalid(absl::StrCat("the tensors cover ", expected, " bytes of the ", data_size,
                                "-byte data section: ", data_size - expected,
                                " trailing bytes (the format requires the data to be covered exactly)"));
  }
  return absl::OkStatus();
}

absl::Status File::Impl::ParseHeader(std::string_view header_text) {
  // Ordered, so tensors() keeps the header's order. Depth-checked before anything recursive.
  absl::StatusOr<nlohmann::ordered_json> parsed = ParseOrderedJson(header_text, "header");
  if (!parsed.ok()) return Invalid(parsed.status().message());
  const nlohmann::ordered_json& header = *parsed;
  if (!header.is_object()) return Invalid("the header is not a JSON object");
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      RETURN_IF_ERROR(ParseMetadata(it.value()));
      continue;
    }
    RETURN_IF_ERROR(ParseTensor(it.key(), it.value()));
  }
  return CheckLayout();
}

File::File(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
File::~File() = default;

absl::StatusOr<std::unique_ptr<File>> File::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> map, MappedFile::Open(path));
  auto impl = std::make_unique<Impl>();
  impl->map = std::move(map);
  const uint64_t size = impl->map->size();
  if (size < 8) {
    return impl->Invalid(absl::StrCat("the file has ", size,
                                      " bytes, fewer than the 8-byte header length"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, impl->map->data(), sizeof(header_len));
  if (header_len > kMaxHeaderBytes) {
    return impl->Invalid(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                      kMaxHeaderBytes, " bytes (not a safetensors file?)"));
  }
  if (header_len > size - 8) {
    return impl->Invalid(absl::StrCat("header length ", header_len, " runs past the end of the ",
                                      size, "-byte file (truncated?)"));
  }
  impl->data_start = 8 + header_len;
  impl->data_size = size - impl->data_start;
  std::string_view header_text(reinterpret_cast<const char*>(impl->map->data()) + 8, header_len);
  RETURN_IF_ERROR(impl->ParseHeader(header_text));
  RETURN_IF_ERROR(impl->map->CheckIntact());
  return std::unique_ptr<File>(new File(std::move(impl)));
}

const std::string& File::path() const { return impl_->map->path(); }
const std::vector<TensorInfo>& File::tensors() const { return impl_->tensors; }
const nlohmann::json& File::metadata() const { return impl_->metadata; }
uint64_t File::data_offset() const { return impl_->data_start; }
absl::Status File::CheckIntact() const { return impl_->map->CheckIntact(); }

const TensorInfo* File::FindTensor(std::string_view name) const {
  auto it = impl_->by_name.find(absl::string_view(name.data(), name.size()));
  return it == impl_->by_name.end() ? nullptr : &impl_->tensors[it->second];
}

absl::StatusOr<absl::Span<const uint8_t>> File::TensorData(std::string_view name) const {
  const TensorInfo* info = FindTensor(name);
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("safetensors file '", path(), "' has no tensor named '",
                     absl::string_view(name.data(), name.size()), "'"));
  }
  return absl::Span<const uint8_t>(impl_->map->data() + impl_->data_start + info->begin,
                                   info->bytes());
}

absl::Status File::ReadTensor(std::string_view name, std::vector<float>* out) const {
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> data, TensorData(name));
  const TensorInfo& info = *FindTensor(name);
  uint32_t ggml_type;
  switch (info.dtype) {
    case DType::kF32: ggml_type = kGgmlF32; break;
    case DType::kF16: ggml_type = kGgmlF16; break;
    case DType::kBF16: ggml_type = kGgmlBF16; break;
    default:
      return absl::UnimplementedError(absl::StrCat(
          "safetensors file '", path(), "': tensor '", info.name, "' has dtype ", info.dtype_name,
          ", which cannot be converted to float32 (supported: F32, F16, BF16)"));
  }
  const int64_t count = info.num_elements();
  out->resize(static_cast<size_t>(count));
  if (count > 0) gguf::Dequantize(ggml_type, data.data(), count, out->data());
  return impl_->map->CheckIntact();  // truncated meanwhile: the values read are zeros
}

absl::StatusOr<std::vector<float>> File::ReadTensor(std::string_view name) const {
  std::vector<float> out;
  RETURN_IF_ERROR(ReadTensor(name, &out));
  return out;
}

// ------------------------------------------------------------------ writer

uint16_t FloatToHalf(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN: a quiet NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 (half-way past 65504): infinity
  const int exp = static_cast<int>(abs >> 23) - 127;
  if (exp >= -14) {
    // Normal half: rebias the exponent, keep the top 10 mantissa bits, round the
    // 13 dropped ones to nearest even (a carry into the exponent is correct).
    uint32_t h = (static_cast<uint32_t>(exp + 15) << 10) | ((abs >> 13) & 0x3ffu);
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  if (exp < -25) return sign;  // below half the smallest subnormal: zero
  // Subnormal half: the value in units of 2^-24 is mantissa (with its implicit bit)
  // shifted right by -exp - 1 (14..24 bits), rounded to nearest even.
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  const int shift = -exp - 1;
  uint32_t h = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

uint16_t FloatToBFloat16(float value) {
  const uint32_t x = std::bit_cast<uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);  // nearest even on the 16 dropped bits
  return static_cast<uint16_t>((x + rounding) >> 16);
}

namespace {

absl::Status CheckTensorToWrite(const TensorToWrite& t) {
  if (t.name.empty()) return absl::InvalidArgumentError("a tensor to write has an empty name");
  if (t.name == kMetadataKey) {
    return absl::InvalidArgumentError("a tensor cannot be named '__metadata__'");
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': cannot write dtype ",
                                                   DTypeName(t.dtype), " (F32, F16 or BF16)"));
  }
  for (int64_t d : t.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': negative dim in shape ", ShapeString(t.shape)));
    }
  }
  const int64_t count = CheckedProduct(t.shape);
  if (count < 0 || static_cast<uint64_t>(count) != t.values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "': shape ",
                                                   ShapeString(t.shape), " needs ", count,
                                                   " values, got ", t.values.size()));
  }
  return absl::OkStatus();
}

// Serializes without throwing: invalid UTF-8 in a caller's string is replaced, not thrown.
template <typename Json>
std::string DumpJson(const Json& j) {
  return j.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
}

void AppendConverted(const TensorToWrite& t, std::string* out) {
  const size_t start = out->size();
  out->resize(start + t.values.size() * DTypeSize(t.dtype));
  char* dst = out->data() + start;
  for (size_t i = 0; i < t.values.size(); ++i) {
    if (t.dtype == DType::kF32) {
      std::memcpy(dst + 4 * i, &t.values[i], 4);
    } else {
      uint16_t bits = t.dtype == DType::kF16 ? FloatToHalf(t.values[i]) : FloatToBFloat16(t.values[i]);
      std::memcpy(dst + 2 * i, &bits, 2);
    }
  }
}

}  // namespace

absl::Status WriteFile(const std::string& path, absl::Span<const TensorToWrite> tensors,
                       const nlohmann::json& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.is_null()) {
    if (!metadata.is_object()) {
      return absl::InvalidArgumentError("safetensors metadata must be a JSON object");
    }
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (auto it = metadata.begin(); it != metadata.end(); ++it) {
      meta[it.key()] = it.value().is_string() ? it.value().get<std::string>() : DumpJson(it.value());
    }
    if (!meta.empty()) header[kMetadataKey] = std::move(meta);
  }
  uint64_t offset = 0;
  absl::flat_hash_set<absl::string_view> names;
  for (const TensorToWrite& t : tensors) {
    RETURN_IF_ERROR(CheckTensorToWrite(t));
    if (!names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' is written twice"));
    }
    const uint64_t bytes = t.values.size() * DTypeSize(t.dtype);
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = DumpJson(header);
  header_text.resize((header_text.size() + 7) / 8 * 8, ' ');

  std::string bytes;
  bytes.reserve(8 + header_text.size() + offset);
  const uint64_t header_len = header_text.size();
  bytes.append(reinterpret_cast<const char*>(&header_len), sizeof(header_len));
  bytes += header_text;
  for (const TensorToWrite& t : tensors) AppendConverted(t, &bytes);

  // Through a temporary file renamed into place, so that a crash never leaves half a file
  // (a training checkpoint, a data cache) where a whole one was.
  const std::string temp = path + ".tmp";
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot create '", path, "'"));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  std::error_code error;
  if (out) std::filesystem::rename(temp, path, error);
  if (!out || error) {
    std::filesystem::remove(temp, error);
    return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace medusa::safetensors
