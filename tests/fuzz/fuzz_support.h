#pragma once
// Helpers shared by the fuzz targets (tests/fuzz/*_fuzz.cc): an in-memory file for
// parsers that take a path, a reader that splits one input into fields, the real
// tokenizers loaded once, and a check that stops the fuzzer on a broken invariant.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/tokenizer.h"

// The libFuzzer entry point every target defines; replay_main.cc calls it too.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// A broken invariant (not a parse error: those are expected): prints what and traps,
// so libFuzzer saves the input as a crash and the replay test fails.
#define FUZZ_CHECK(condition, what)                                               \
  do {                                                                            \
    if (!(condition)) ::medusa::fuzz::Fail(__FILE__, __LINE__, #condition, what); \
  } while (0)

namespace medusa::fuzz {

[[noreturn]] void Fail(const char* file, int line, const char* condition, absl::string_view what);

// The bytes as a file that loaders can open by path (a memfd, named /proc/self/fd/N):
// nothing touches the disk, and the file is gone when this object is.
class MemoryFile {
 public:
  MemoryFile(const uint8_t* data, size_t size);
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// Splits an input into fields, as libFuzzer's FuzzedDataProvider does, but from the front
// and readable in a seed file: String() reads up to a single backslash not followed by
// another ("\\" stands for one backslash), so "stop\ text" is the fields "stop", "text".
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : rest_(reinterpret_cast<const char*>(data), size) {}
  uint8_t Byte();  // 0 when empty
  std::string String(size_t max_size);
  std::string_view Rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  std::string_view rest_;
};

// Real tokenizers from the committed fixtures, loaded on first use (aborting with the
// loader's message if they cannot be: the fuzzer would test nothing):
// SentencePiece BPE with byte fallback (stories260K's tok512 .model), and byte-level BPE
// with a ChatML template (SmolLM2's tokenizer.json).
const Tokenizer& SpmTokenizer();
const Tokenizer& BpeTokenizer();

// Silences the engine's log (warnings about odd files would flood the fuzzer's output).
void QuietLogs();

}  // namespace medusa::fuzz

namespace medusa::fuzz {

// Uses a tokenizer a fuzzed file produced: encodes `text` (with and without special
// tokens), checks every id is inside the vocabulary, and decodes the ids back, whole and
// streamed. Returns the ids.
std::vector<int32_t> ExerciseTokenizer(const Tokenizer& tokenizer, std::string_view text);

}  // namespace medusa::fuzz

namespace medusa::fuzz {

// A directory of this process's own (under /dev/shm when there is one, so files written
// there stay in memory), removed at exit: for loaders that read a checkpoint directory.
// Write() replaces a file in it.
const std::string& ScratchDir();
void Write(const std::string& path, std::string_view bytes);

}  // namespace medusa::fuzz

namespace medusa::fuzz {

// Whether a parser accepted the input; with MEDUSA_FUZZ_VERBOSE set, says why not on stderr
// (to see how deep a seed gets: MEDUSA_FUZZ_VERBOSE=1 build/bin/<name>_replay FILE).
bool Accepted(const absl::Status& status, absl::string_view what);

}  // namespace medusa::fuzz
