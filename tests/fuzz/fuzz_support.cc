#include "fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "spdlog/spdlog.h"

namespace medusa::fuzz {
namespace {

std::unique_ptr<Tokenizer> LoadOrDie(absl::StatusOr<std::unique_ptr<Tokenizer>> loaded, const char* what) {
  if (!loaded.ok()) {
    std::fprintf(stderr, "fuzz: cannot load the %s tokenizer: %s\n", what, loaded.status().ToString().c_str());
    std::abort();
  }
  return *std::move(loaded);
}

}  // namespace

void Fail(const char* file, int line, const char* condition, absl::string_view what) {
  std::fprintf(stderr, "%s:%d: invariant broken: %s: %.*s\n", file, line, condition, static_cast<int>(what.size()),
               what.data());
  std::fflush(stderr);
  __builtin_trap();
}

MemoryFile::MemoryFile(const uint8_t* data, size_t size) {
  fd_ = memfd_create("fuzz-input", MFD_CLOEXEC);
  if (fd_ < 0) {
    std::perror("fuzz: memfd_create");
    std::abort();
  }
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd_, data + written, size - written);
    if (n <= 0) {
      std::perror("fuzz: write to memfd");
      std::abort();
    }
    written += static_cast<size_t>(n);
  }
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

MemoryFile::~MemoryFile() { close(fd_); }

uint8_t Reader::Byte() {
  if (rest_.empty()) return 0;
  const uint8_t b = static_cast<uint8_t>(rest_.front());
  rest_.remove_prefix(1);
  return b;
}

std::string Reader::String(size_t max_size) {
  std::string out;
  while (!rest_.empty() && out.size() < max_size) {
    char c = rest_.front();
    rest_.remove_prefix(1);
    if (c == '\\' && !rest_.empty()) {
      c = rest_.front();
      rest_.remove_prefix(1);
      if (c != '\\') break;
    }
    out += c;
  }
  return out;
}

const Tokenizer& SpmTokenizer() {
  static const Tokenizer* tokenizer =
      LoadOrDie(LoadSentencePieceModel(MEDUSA_SOURCE_DIR "/tests/fixtures/hf/stories260k/tokenizer.model"),
                "SentencePiece")
          .release();
  return *tokenizer;
}

const Tokenizer& BpeTokenizer() {
  static const Tokenizer* tokenizer =
      LoadOrDie(LoadHfTokenizer(MEDUSA_SOURCE_DIR "/tests/fixtures/hf/smollm2_tokenizer"), "byte-level BPE").release();
  return *tokenizer;
}

void QuietLogs() { spdlog::set_level(spdlog::level::off); }

}  // namespace medusa::fuzz

namespace medusa::fuzz {

std::vector<int32_t> ExerciseTokenizer(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<int32_t> ids;
  for (const bool parse_special : {false, true}) {
    ids = tokenizer.Encode(text, /*add_bos=*/true, parse_special);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size(), "an id outside the vocabulary");
    const std::string decoded = tokenizer.Decode(ids);
    StreamingDetokenizer stream(tokenizer);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.Push(id);
    streamed += stream.Flush();
    FUZZ_CHECK(streamed.size() <= 3 * decoded.size(), "streamed text far longer than the decoded bytes");
  }
  for (int32_t id = 0; id < std::min(tokenizer.vocab_size(), 64); ++id) {
    tokenizer.Piece(id);
    tokenizer.IsControl(id);
  }
  tokenizer.stop_ids();
  return ids;
}

}  // namespace medusa::fuzz

namespace medusa::fuzz {

const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const std::filesystem::path base =
        std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::string pattern = (base / "medusa-fuzz-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("fuzz: mkdtemp");
      std::abort();
    }
    std::atexit([] { std::filesystem::remove_all(ScratchDir()); });
    return new std::string(pattern);
  }();
  return *dir;
}

void Write(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

}  // namespace medusa::fuzz

namespace medusa::fuzz {

bool Accepted(const absl::Status& status, absl::string_view what) {
  static const bool verbose = std::getenv("MEDUSA_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "  %.*s: %s\n", static_cast<int>(what.size()), what.data(),
                 status.ok() ? "OK" : status.ToString().substr(0, 300).c_str());
  }
  return status.ok();
}

}  // namespace medusa::fuzz
