#pragma once
// Reading the small files the server's security flags name (PEM certificates, keys, the
// bearer token) through the engine's bounded reader (engine/io/file_reader.h): regular
// files only, of bounded size, so that a FIFO, a directory or /dev/zero given by mistake is
// a clear start-up error instead of a hang or a huge read.

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace medusa::server {

// The whole of `path`. InvalidArgument naming `what` (e.g. "--tls-cert-file") when the file
// cannot be opened, is not a regular file, is larger than `max_bytes` or is empty.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes, const std::string& what);

}  // namespace medusa::server
