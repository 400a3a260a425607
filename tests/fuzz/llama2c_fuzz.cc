// llama2.c checkpoints: the seven-int32 header, the config it implies and the tensor
// layout checked against the file size, then the weights read (bounded by the file's
// size, since every tensor must lie inside it). LoadModel also tells the format apart by
// the magic. The loader reads only from a path: the input is given as an in-memory file
// (MemoryFile).

#include "engine/model/loader.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::QuietLogs();
  medusa::fuzz::MemoryFile input(data, size);
  auto model = medusa::LoadLlama2c(input.path());
  if (medusa::fuzz::Accepted(model.status(), "LoadLlama2c"))
    FUZZ_CHECK(model->config.Validate().ok(), "a loaded config that does not validate");
  return 0;
}
