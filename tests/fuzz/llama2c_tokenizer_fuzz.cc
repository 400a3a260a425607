// llama2.c's tokenizer.bin: the first two bytes of the input are the model's vocab_size
// (little-endian, the loader's other argument, which comes from the checkpoint's header),
// the rest is the file. A tokenizer that loads is then used (ExerciseTokenizer). The
// loader reads only from a path: the file is given as an in-memory file (MemoryFile).

#include "engine/tokenizer/tokenizer.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  medusa::fuzz::QuietLogs();
  const int vocab_size = data[0] | (data[1] << 8);
  medusa::fuzz::MemoryFile input(data + 2, size - 2);
  auto tokenizer = medusa::LoadLlama2cTokenizer(input.path(), vocab_size);
  if (!medusa::fuzz::Accepted(tokenizer.status(), "LoadLlama2cTokenizer")) return 0;
  FUZZ_CHECK((*tokenizer)->vocab_size() == vocab_size, "a vocabulary of another size than asked for");
  medusa::fuzz::ExerciseTokenizer(**tokenizer, "Once upon a time, \xe2\x96\x81 caf\xc3\xa9 <s> \xf0\x9f\x98\x80 12");
  return 0;
}
