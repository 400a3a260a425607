#pragma once
// Reading a whole file into memory, bounded: every file the engine reads whole (tokenizers,
// JSON configs, trees, calibrations, prompts) goes through here, so that a FIFO, a directory,
// /dev/zero or a multi-gigabyte file given by mistake is refused at once with an error naming
// the path, instead of blocking for ever or exhausting memory. Weights are mapped, not read
// (engine/model/mapped_file.h).

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace medusa {

// Caps by kind of file, far above any real one.
// Tokenizers: Gemma 3's tokenizer.json (262k tokens) is 33 MB, SentencePiece models a few MB.
inline constexpr uint64_t kMaxTokenizerFileBytes = uint64_t{64} << 20;
// JSON configs (config.json, tokenizer_config.json, tree, calibration and auto-tree files): KBs.
inline constexpr uint64_t kMaxJsonConfigBytes = uint64_t{16} << 20;
// Prompt files (JSONL or JSON lists of prompts) for the CLI's generate, bench and train.
inline constexpr uint64_t kMaxPromptsFileBytes = uint64_t{256} << 20;

// The file's bytes. `what` names the kind of file in errors ("tokenizer", "Medusa tree").
// NotFound when it does not exist, PermissionDenied when it cannot be opened, InvalidArgument
// when it is not a regular file (a directory, FIFO, socket or device: checked before any read,
// and the open does not block on a FIFO) or is larger than `max_bytes`; DataLoss on a read error.
absl::StatusOr<std::string> ReadFileBounded(const std::string& path, uint64_t max_bytes, absl::string_view what);

// `message` with the status code errno `err` means for a file: NotFound (ENOENT, ENOTDIR),
// PermissionDenied (EACCES, EPERM), else `otherwise`.
absl::Status FileErrnoStatus(int err, const std::string& message,
                             absl::StatusCode otherwise = absl::StatusCode::kInvalidArgument);

// OK for a regular file; else InvalidArgument naming `what`, the path and what it is ("a FIFO").
absl::Status RequireRegularFile(const struct stat& st, const std::string& path, absl::string_view what);

}  // namespace medusa
