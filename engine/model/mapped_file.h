#pragma once
// A read-only memory map of a whole file, shared by the model loaders so that
// large checkpoints are read lazily by the kernel instead of copied up front.
//
// A file truncated by someone else while it is mapped would make the next read of a lost page
// raise SIGBUS and kill the process. Instead, such a read returns zeros (see mapped_file.cc)
// and the map remembers it: a loader calls CheckIntact() after reading, and a truncated file
// gives DataLoss instead of a crash or silently wrong weights.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace medusa {

class MappedFile {
 public:
  // NotFound (naming the path) when the file does not exist; InvalidArgument when it is not a
  // regular file (a directory, FIFO or device); an empty file maps to size() == 0 and
  // data() == nullptr.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Whether a read so far touched pages the file lost after it was mapped (they read as zeros).
  bool truncated() const;
  // DataLoss naming the path when truncated(); OK otherwise.
  absl::Status CheckIntact() const;

 private:
  MappedFile(std::string path, const uint8_t* data, uint64_t size, int guard_slot)
      : path_(std::move(path)), data_(data), size_(size), guard_slot_(guard_slot) {}

  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  int guard_slot_ = -1;  // its entry in the SIGBUS guard's table; -1 when unguarded
};

}  // namespace medusa
