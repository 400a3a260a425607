#pragma once
// A read-only memory map of a whole file, shared by the model loaders so that
// large checkpoints are read lazily by the kernel instead of copied up front.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace medusa {

class MappedFile {
 public:
  // NotFound (naming the path) when the file does not exist; an empty file maps
  // to size() == 0 and data() == nullptr.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, uint64_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace medusa
