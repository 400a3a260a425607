#include "engine/model/loader.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/mapped_file.h"
#include "kernels/base/status_macros.h"

namespace medusa {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path) {
  // Opening once here gives the same NotFound / not-a-file errors for both formats.
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const bool is_gguf = file->size() >= 4 && std::memcmp(file->data(), "GGUF", 4) == 0;
  file.reset();
  return is_gguf ? LoadGguf(path) : LoadLlama2c(path);
}

}  // namespace medusa
