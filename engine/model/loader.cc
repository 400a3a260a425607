#include "engine/model/loader.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/mapped_file.h"
#include "kernels/base/status_macros.h"

namespace medusa {

absl::StatusOr<LoadedModel> LoadModel(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) return LoadHuggingFace(path);
  // Opening once here gives the same NotFound / not-a-file errors for both formats.
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const bool is_gguf = file->size() >= 4 && std::memcmp(file->data(), "GGUF", 4) == 0;
  file.reset();
  return is_gguf ? LoadGguf(path) : LoadLlama2c(path);
}

absl::Status CheckWeightsFitInMemory(const ModelConfig& c, const std::string& where) {
  const double layer = static_cast<double>(c.dim) * (c.q_dim() + 2.0 * c.kv_dim()) +
                       static_cast<double>(c.q_dim()) * c.dim + 3.0 * c.dim * c.hidden_dim + 2.0 * c.dim;
  const double params = c.n_layers * layer + (c.tied_classifier ? 1.0 : 2.0) * c.vocab_size * c.dim + c.dim;
  const double needed = 4.0 * params;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double available_kib = 0;
  while (meminfo >> key) {
    if (key == "MemAvailable:") {
      meminfo >> available_kib;
      break;
    }
    meminfo.ignore(1 << 10, '\n');
  }
  const double available = available_kib * 1024.0;
  if (available > 0 && needed > available) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: its weights need %.1f GiB of memory as float32 (%.2f billion parameters); %.1f GiB is available",
        where, needed / (1 << 30), params / 1e9, available / (1 << 30)));
  }
  return absl::OkStatus();
}

}  // namespace medusa
