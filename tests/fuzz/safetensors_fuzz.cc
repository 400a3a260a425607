// Safetensors files: the header (JSON, offsets, dtypes, __metadata__), every tensor's data
// (converted to float where the dtype allows and the size is modest), and the Medusa heads
// reader on the same file, against a small model config (dim 16, vocabulary 40: the
// committed heads fixtures' sizes). The reader parses only from a path: the input is
// given as an in-memory file (MemoryFile).

#include <vector>

#include "engine/medusa/heads_file.h"
#include "engine/model/safetensors.h"
#include "fuzz_support.h"
#include "kernels/model/config.h"
#include "nlohmann/json.hpp"

namespace {

constexpr int64_t kMaxFloats = int64_t{16} << 20;  // 64 MiB of float32

medusa::ModelConfig SmallConfig() {
  medusa::ModelConfig config;
  config.dim = 16;
  config.hidden_dim = 32;
  config.n_layers = 1;
  config.n_heads = 2;
  config.n_kv_heads = 2;
  config.head_dim = 8;
  config.vocab_size = 40;
  config.max_seq_len = 64;
  return config;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::QuietLogs();
  medusa::fuzz::MemoryFile input(data, size);
  auto file = medusa::safetensors::File::Open(input.path());
  if (!medusa::fuzz::Accepted(file.status(), "safetensors::File::Open")) return 0;
  const medusa::safetensors::File& st = **file;
  st.metadata().dump();
  std::vector<float> floats;
  for (const auto& info : st.tensors()) {
    FUZZ_CHECK(info.begin <= info.end && info.end <= size - st.data_offset(), "a tensor outside the file");
    FUZZ_CHECK(st.FindTensor(info.name) != nullptr, "a listed tensor not found by name");
    auto bytes = st.TensorData(info.name);
    FUZZ_CHECK(bytes.ok() && bytes->size() == info.bytes(), "tensor data of the wrong size");
    if (info.num_elements() >= 0 && info.num_elements() <= kMaxFloats) st.ReadTensor(info.name, &floats).IgnoreError();
  }
  medusa::fuzz::Accepted(medusa::LoadMedusaHeads(st, SmallConfig()).status(), "LoadMedusaHeads");
  return 0;
}
