#include "engine/model/loader.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model/mapped_file.h"

namespace medusa {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path) {
  // Opening once here gives the same NotFound / not-a-file errors for both formats.
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  const bool is_gguf = (*file)->size() >= 4 && std::memcmp((*file)->data(), "GGUF", 4) == 0;
  file->reset();
  return is_gguf ? LoadGguf(path) : LoadLlama2c(path);
}

}  // namespace medusa
