// GGUF files: the header, every metadata value (as JSON), every tensor's data, the
// vocabulary (LoadGgufTokenizer), and the model loader (LoadGguf) when the tensors would
// convert to at most 64 MiB of floats, so the fuzzer never asks for more memory than a
// real file of its size would need. GGUF parses only from a path: the input is given as an
// in-memory file (MemoryFile).

#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/loader.h"
#include "engine/tokenizer/tokenizer.h"
#include "fuzz_support.h"
#include "nlohmann/json.hpp"

namespace {

constexpr int64_t kMaxFloats = int64_t{16} << 20;  // 64 MiB of float32

// The floats every tensor converts to, or -1 past kMaxFloats.
int64_t TotalFloats(const medusa::gguf::File& file) {
  int64_t total = 0;
  for (const auto& info : file.tensors()) {
    const int64_t n = info.num_elements();
    if (n < 0 || n > kMaxFloats - total) return -1;
    total += n;
  }
  return total;
}

void ReadEverything(const medusa::gguf::File& file) {
  for (const std::string& key : file.Keys()) {
    auto value = file.GetJson(key);
    // Strings hold any bytes: a dump must replace invalid UTF-8 (the default throws).
    if (value.ok()) value->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    file.ArrayLength(key).IgnoreError();
    file.GetString(key).IgnoreError();
    file.GetInt(key).IgnoreError();
    file.GetFloat(key).IgnoreError();
  }
  std::vector<float> floats;
  for (const auto& info : file.tensors()) {
    file.TensorData(info).IgnoreError();
    if (info.num_elements() >= 0 && info.num_elements() <= kMaxFloats) file.ReadTensor(info, &floats).IgnoreError();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::QuietLogs();
  medusa::fuzz::MemoryFile input(data, size);
  auto file = medusa::gguf::File::Open(input.path());
  if (!medusa::fuzz::Accepted(file.status(), "gguf::File::Open")) return 0;
  ReadEverything(**file);
  if (auto tokenizer = medusa::LoadGgufTokenizer(**file);
      medusa::fuzz::Accepted(tokenizer.status(), "LoadGgufTokenizer")) {
    medusa::fuzz::ExerciseTokenizer(**tokenizer, "Hello world! <|im_start|> \xe2\x96\x81 caf\xc3\xa9 12345");
  }
  if (TotalFloats(**file) >= 0) medusa::fuzz::Accepted(medusa::LoadGguf(input.path()).status(), "LoadGguf");
  return 0;
}
