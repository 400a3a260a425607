#include "engine/model/loader.h"

#include <unistd.h>

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

absl::StatusOr<LoadedModel> LoadModel(const std::string& path, WeightMode mode) {
  // Each loader turns allocation failures and library exceptions into a Status itself.
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) return LoadHuggingFace(path, mode);
  // Opening once here gives the same NotFound / not-a-file errors for both formats.
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const bool is_gguf = file->size() >= 4 && std::memcmp(file->data(), "GGUF", 4) == 0;
  file.reset();
  return is_gguf ? LoadGguf(path, mode) : LoadLlama2c(path, mode);
}

namespace {

// Bytes of memory available to a new allocation: /proc/meminfo's MemAvailable (it counts
// reclaimable page cache, which a mapped checkpoint mostly is), else free physical pages; 0
// when neither is known (then nothing is refused).
double AvailableBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double available_kib = 0;
  while (meminfo >> key) {
    if (key == "MemAvailable:") {
      meminfo >> available_kib;
      return available_kib * 1024.0;
    }
    meminfo.ignore(1 << 10, '\n');
  }
  const long pages = sysconf(_SC_AVPHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? static_cast<double>(pages) * page_size : 0.0;
}

}  // namespace

absl::Status CheckBytesFitInMemory(uint64_t bytes, const std::string& where) {
  const double needed = static_cast<double>(bytes), available = AvailableBytes();
  if (available > 0 && needed > available) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: loading it needs %.1f GiB of memory; %.1f GiB is available", where, needed / (1 << 30),
                        available / (1 << 30)));
  }
  return absl::OkStatus();
}

absl::Status CheckWeightsFitInMemory(const ModelConfig& c, const std::string& where, double bytes_per_weight) {
  const double layer = static_cast<double>(c.dim) * (c.q_dim() + 2.0 * c.kv_dim()) +
                       static_cast<double>(c.q_dim()) * c.dim + 3.0 * c.dim * c.hidden_dim + 2.0 * c.dim;
  const double params = c.n_layers * layer + (c.tied_classifier ? 1.0 : 2.0) * c.vocab_size * c.dim + c.dim;
  const double needed = bytes_per_weight * params;
  const double available = AvailableBytes();
  if (available > 0 && needed > available) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: its weights need %.1f GiB of memory at %g bytes a weight (%.2f "
                        "billion parameters); %.1f GiB is available",
                        where, needed / (1 << 30), bytes_per_weight, params / 1e9, available / (1 << 30)));
  }
  return absl::OkStatus();
}

}  // namespace medusa
