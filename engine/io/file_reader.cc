#include "engine/io/file_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace medusa {
namespace {

// Closes the descriptor on every return path.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status OpenError(int err, absl::string_view what, const std::string& path) {
  return FileErrnoStatus(err, absl::StrCat("cannot open ", what, " '", path, "': ", std::strerror(err)));
}

const char* KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

}  // namespace

absl::Status FileErrnoStatus(int err, const std::string& message, absl::StatusCode otherwise) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::Status(otherwise, message);
  }
}

absl::Status RequireRegularFile(const struct stat& st, const std::string& path, absl::string_view what) {
  if (S_ISREG(st.st_mode)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " '", path, "' is ", KindOf(st.st_mode), ", not a regular file"));
}

absl::StatusOr<std::string> ReadFileBounded(const std::string& path, uint64_t max_bytes, absl::string_view what) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It does not
  // change reads of regular files, the only ones read below.
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) return OpenError(errno, what, path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return OpenError(errno, what, path);
  if (absl::Status regular = RequireRegularFile(st, path, what); !regular.ok()) return regular;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is ", size, " bytes, more than the limit of ",
                                                   max_bytes, " bytes for this kind of file"));
  }
  // Read to the end, not to st_size: files under /proc say 0 bytes, and a file may grow
  // while read. Either way no more than max_bytes are kept.
  std::string bytes;
  bytes.reserve(size);
  char chunk[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::DataLossError(absl::StrCat("cannot read ", what, " '", path, "': ", std::strerror(errno)));
    if (n == 0) break;
    if (bytes.size() + static_cast<uint64_t>(n) > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " '", path, "' holds more than the limit of ", max_bytes, " bytes for this kind of file"));
    }
    bytes.append(chunk, static_cast<size_t>(n));
  }
  return bytes;
}

}  // namespace medusa
