#include "server/small_file.h"

#include "absl/strings/str_cat.h"
#include "engine/io/file_reader.h"

namespace medusa::server {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes, const std::string& what) {
  absl::StatusOr<std::string> data = ReadFileBounded(path, max_bytes, what);
  // A flag's file that cannot be used is the flag's problem, whatever the reason.
  if (!data.ok()) return absl::InvalidArgumentError(data.status().message());
  if (data->empty()) return absl::InvalidArgumentError(absl::StrCat(what, " ", path, ": empty"));
  return data;
}

}  // namespace medusa::server
