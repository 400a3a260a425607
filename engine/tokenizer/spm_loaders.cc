// Loaders for SentencePiece BPE vocabularies: SentencePiece .model files and
// llama2.c's tokenizer.bin. (GGUF "llama" vocabularies: gguf_tokenizer.cc.)

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "engine/io/file_reader.h"
#include "engine/io/load_guard.h"
#include "engine/tokenizer/spm_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "kernels/base/status_macros.h"
#include "sentencepiece_model.pb.h"

namespace medusa {
namespace {

using tokenizer_internal::CreateSpmTokenizer;
using tokenizer_internal::SpmPiece;
using tokenizer_internal::SpmSettings;
using tokenizer_internal::TokenType;
namespace sp = ::medusa::sentencepiece;

// Regular files of bounded size only: `--tokenizer /dev/zero` or a FIFO fails at once.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  return ReadFileBounded(path, kMaxTokenizerFileBytes, "tokenizer");
}

absl::StatusOr<TokenType> ConvertType(int type, int id, const std::string& path) {
  if (type < static_cast<int>(TokenType::kNormal) || type > static_cast<int>(TokenType::kByte)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: piece %d has unknown type %d", path, id, type));
  }
  return static_cast<TokenType>(type);
}

// Only what the engine implements is accepted: BPE, and the normalizer rules
// that need no character map (as in Llama-2: "identity").
absl::Status CheckSupported(const sp::ModelProto& model, const std::string& path) {
  if (!model.has_trainer_spec() || !model.has_normalizer_spec() || model.pieces_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": not a complete SentencePiece model (pieces, trainer_spec or normalizer_spec "
        "missing; truncated file?)"));
  }
  const auto& trainer = model.trainer_spec();
  if (trainer.model_type() != sp::TrainerSpec::BPE) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": SentencePiece model type ", sp::TrainerSpec::ModelType_Name(trainer.model_type()),
        " is not supported (only BPE)"));
  }
  if (trainer.treat_whitespace_as_suffix()) {
    return absl::UnimplementedError(
        absl::StrCat(path, ": treat_whitespace_as_suffix is not supported"));
  }
  const auto& normalizer = model.normalizer_spec();
  if (!normalizer.precompiled_charsmap().empty()) {
    return absl::UnimplementedError(absl::StrCat(
        path, ": normalizer \"", normalizer.name(),
        "\" needs a precompiled character map, which is not supported (only \"identity\")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceModelUnguarded(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  sp::ModelProto model;
  if (!model.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a SentencePiece model (the protobuf does not parse)"));
  }
  RETURN_IF_ERROR(CheckSupported(model, path));

  std::vector<SpmPiece> pieces;
  pieces.reserve(model.pieces_size());
  for (int id = 0; id < model.pieces_size(); ++id) {
    const auto& p = model.pieces(id);
    ASSIGN_OR_RETURN(TokenType type, ConvertType(p.type(), id, path));
    pieces.push_back({p.piece(), p.score(), type});
  }
  const auto& trainer = model.trainer_spec();
  const auto& normalizer = model.normalizer_spec();
  SpmSettings settings;
  settings.add_dummy_prefix = normalizer.add_dummy_prefix();
  settings.remove_extra_whitespaces = normalizer.remove_extra_whitespaces();
  settings.escape_whitespaces = normalizer.escape_whitespaces();
  settings.byte_fallback = trainer.byte_fallback();
  settings.unk_id = trainer.unk_id();
  settings.bos_id = trainer.bos_id();
  settings.eos_id = trainer.eos_id();
  settings.unk_surface = trainer.unk_surface();
  return CreateSpmTokenizer(std::move(pieces), std::move(settings), path);
}

// llama2.c's export (tokenizer.py) wrote every piece with "▁" replaced by ' ',
// and BOS/EOS as "\n<s>\n" / "\n</s>\n"; ids 0, 1, 2 are <unk>, <s>, </s>. The
// normalizer settings are not stored: llama2.c adds the dummy prefix and keeps
// whitespace as it is, and so do we.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizerUnguarded(const std::string& path, int vocab_size) {
  if (vocab_size < 3) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: vocab_size %d is too small (ids 0, 1, 2 are unk, bos, eos)", path, vocab_size));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  const std::string& data = bytes;
  size_t pos = 0;
  const auto read_i32 = [&](int32_t* v) {
    if (data.size() - pos < 4) return false;
    std::memcpy(v, data.data() + pos, 4);
    pos += 4;
    return true;
  };
  int32_t max_token_length = 0;
  if (!read_i32(&max_token_length) || max_token_length <= 0 || max_token_length > (1 << 16)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: not a llama2.c tokenizer (max_token_length %d must be in 1..65536)",
                        path, max_token_length));
  }
  // Each token takes at least 9 bytes (score, length, one byte): a vocabulary size the file
  // cannot hold is refused before the pieces are allocated.
  constexpr size_t kMinTokenBytes = 9;
  if (static_cast<size_t>(vocab_size) > (data.size() - pos) / kMinTokenBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: the model's vocab_size %d needs at least %d bytes of tokens, but the file has %d: "
                        "not this model's tokenizer, or truncated",
                        path, vocab_size, static_cast<size_t>(vocab_size) * kMinTokenBytes, data.size() - pos));
  }
  std::vector<SpmPiece> pieces(vocab_size);
  bool has_bytes = false;
  for (int id = 0; id < vocab_size; ++id) {
    float score = 0;
    int32_t length = 0;
    if (data.size() - pos < 8) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: truncated at token %d of %d (file size %d)", path, id, vocab_size, data.size()));
    }
    std::memcpy(&score, data.data() + pos, 4);
    pos += 4;
    read_i32(&length);
    if (length <= 0 || length > max_token_length ||
        static_cast<size_t>(length) > data.size() - pos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: token %d has length %d (max_token_length %d, %d bytes left): corrupt or truncated",
          path, id, length, max_token_length, data.size() - pos));
    }
    std::string piece = data.substr(pos, length);
    pos += length;
    SpmPiece& p = pieces[id];
    p.score = score;
    if (id == 0) {
      p.type = TokenType::kUnknown;
    } else if (id == 1 || id == 2) {
      p.type = TokenType::kControl;
      piece = id == 1 ? "<s>" : "</s>";
    } else if (tokenizer_internal::ParseBytePiece(piece) >= 0) {
      p.type = TokenType::kByte;
      has_bytes = true;
    }
    p.piece = absl::StrReplaceAll(piece, {{" ", "\xE2\x96\x81"}});
  }
  SpmSettings settings;
  settings.byte_fallback = has_bytes;
  return CreateSpmTokenizer(std::move(pieces), std::move(settings), path);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceModel(const std::string& path) {
  return GuardLoad(absl::StrCat("tokenizer '", path, "'"), [&] { return LoadSentencePieceModelUnguarded(path); });
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path, int vocab_size) {
  return GuardLoad(absl::StrCat("tokenizer '", path, "'"),
                   [&] { return LoadLlama2cTokenizerUnguarded(path, vocab_size); });
}

}  // namespace medusa
