#include "server/small_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace medusa::server {
namespace {

absl::Status Problem(const std::string& what, const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": ", why));
}

}  // namespace

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes, const std::string& what) {
  // O_NONBLOCK: opening a FIFO with no writer must not block; it is refused below.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return Problem(what, path, std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { close(fd); }
  } closer{fd};
  struct stat st = {};
  if (fstat(fd, &st) != 0) return Problem(what, path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Problem(what, path, "not a regular file");
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    return Problem(what, path, absl::StrCat("larger than ", max_bytes, " bytes (", st.st_size, ")"));
  }
  std::string data;
  data.resize(max_bytes + 1);  // one more byte: a file that grew past the limit is caught
  size_t size = 0;
  while (size < data.size()) {
    const ssize_t n = read(fd, data.data() + size, data.size() - size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Problem(what, path, std::strerror(errno));
    if (n == 0) break;
    size += static_cast<size_t>(n);
  }
  if (size > max_bytes) return Problem(what, path, absl::StrCat("larger than ", max_bytes, " bytes"));
  if (size == 0) return Problem(what, path, "empty");
  data.resize(size);
  return data;
}

}  // namespace medusa::server
