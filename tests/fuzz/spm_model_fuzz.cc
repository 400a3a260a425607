// SentencePiece .model files (a protobuf ModelProto): parsed, checked for what the engine
// supports, turned into a tokenizer that is then used (ExerciseTokenizer). The loader reads
// only from a path: the input is given as an in-memory file (MemoryFile).

#include "engine/tokenizer/tokenizer.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::QuietLogs();
  medusa::fuzz::MemoryFile input(data, size);
  auto tokenizer = medusa::LoadSentencePieceModel(input.path());
  if (!medusa::fuzz::Accepted(tokenizer.status(), "LoadSentencePieceModel")) return 0;
  medusa::fuzz::ExerciseTokenizer(**tokenizer,
                                  "Once upon a time,  two\tspaces \xe2\x96\x81 caf\xc3\xa9 <s> \xf0\x9f\x98\x80");
  return 0;
}
