// Hugging Face checkpoints' config.json, through the loader itself (LoadHuggingFace, which
// reads a directory: the input is written as config.json into a scratch directory in
// memory, ScratchDir). The directory holds no weights, so a config that passes stops at
// the missing model.safetensors.

#include <filesystem>

#include "engine/model/loader.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::QuietLogs();
  const std::string& dir = medusa::fuzz::ScratchDir();
  medusa::fuzz::Write(dir + "/config.json", std::string_view(reinterpret_cast<const char*>(data), size));
  auto model = medusa::LoadHuggingFace(dir);
  medusa::fuzz::Accepted(model.status(), "LoadHuggingFace");
  FUZZ_CHECK(!model.ok(), "a checkpoint loaded without weights");
  return 0;
}
