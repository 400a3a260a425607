#pragma once
// Tokenizers, written here (Debian's libsentencepiece cannot be linked; see ENGINEERING.md).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace medusa {
namespace gguf { class File; }

// A byte range [begin, end) of a text.
struct TextSpan {
  size_t begin = 0;
  size_t end = 0;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes text into token ids. add_bos prepends the BOS token when the
  // vocabulary has one and the model's settings ask for it. parse_special
  // recognizes special-token strings (e.g. "<|im_start|>") in the text as single
  // tokens; without it they are encoded as plain text.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                                      bool parse_special = false) const = 0;
  // Encodes text rendered from a template: special-token strings become special tokens
  // only outside the `literal` spans (what users wrote: message contents and roles), so a
  // message that spells "<|im_end|>" stays text. Where no literal span holds such a string,
  // the ids are Encode(text, false, true)'s.
  virtual std::vector<int32_t> EncodeTemplated(std::string_view text, absl::Span<const TextSpan> literal) const = 0;

  // The bytes a token stands for in running text (byte-fallback tokens give their
  // byte, "▁" gives a space, byte-level BPE symbols map back to bytes). Control
  // tokens (BOS, EOS, ...) give "". `previous` is the token before it (or -1),
  // for the SentencePiece rule that drops a leading space right after BOS.
  virtual std::string TokenBytes(int32_t id, int32_t previous) const = 0;

  // Decodes a sequence (concatenated TokenBytes); may hold invalid UTF-8 if the
  // ids end inside a character.
  std::string Decode(absl::Span<const int32_t> ids) const;

  virtual int vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;   // -1 if none
  virtual int32_t eos_id() const = 0;   // -1 if none
  // Every id that ends generation (EOS, end-of-turn such as <|im_end|>).
  virtual std::vector<int32_t> stop_ids() const = 0;
  virtual std::string_view Piece(int32_t id) const = 0;  // the raw vocabulary string
  virtual bool IsControl(int32_t id) const = 0;
  // Chat template from the model's metadata ("" if none).
  virtual std::string chat_template() const { return ""; }
  // A chat-template family (chat_template.h) to render chats with instead of recognizing the
  // model's own template: --chat-template. Empty: the model's own.
  void set_chat_template_override(std::string family) { chat_template_override_ = std::move(family); }
  const std::string& chat_template_override() const { return chat_template_override_; }
  virtual bool add_bos_default() const { return true; }

 private:
  std::string chat_template_override_;
};

// SentencePiece BPE (Llama-2 family) from a SentencePiece .model file.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceModel(const std::string& path);
// SentencePiece BPE from llama2.c's tokenizer.bin (needs the model's vocab size).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadLlama2cTokenizer(const std::string& path,
                                                                int vocab_size);
// From GGUF metadata: "llama" (SentencePiece BPE) or "gpt2" (byte-level BPE).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGgufTokenizer(const gguf::File& file);
// From a Hugging Face checkpoint directory's tokenizer.json (byte-level BPE), with
// tokenizer_config.json (special tokens, add_bos_token, chat_template) and
// chat_template.jinja beside it; Unimplemented, naming what, for other families.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& dir);

// Turns a stream of token ids into text, emitting only complete UTF-8 characters.
class StreamingDetokenizer {
 public:
  // `previous` is the token before the stream (the prompt's last token), or -1
  // at the start of a text: SentencePiece drops the leading space of the first
  // piece only at the start or right after BOS, so a continuation of a prompt
  // should pass the prompt's last token to keep the space of its first word.
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, int32_t previous = -1)
      : tokenizer_(tokenizer), previous_(previous) {}
  // Returns the text that became complete with this token (possibly "").
  std::string Push(int32_t id);
  // Returns whatever is left at the end of the stream (invalid bytes as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  int32_t previous_ = -1;
  std::string pending_;
};

struct ChatMessage {
  std::string role;
  std::string content;
};
// A conversation rendered by a chat template, and where in it the messages' own text
// (roles and contents) lies: those bytes must never become control tokens.
struct RenderedChat {
  std::string text;
  std::vector<TextSpan> literal;
};
// Formats messages with the model's chat template (its family recognized, or the one
// set_chat_template_override names; chat_template.h), ending with the assistant's turn
// opening when add_generation_prompt is set.
absl::StatusOr<RenderedChat> RenderChat(const Tokenizer& tokenizer, absl::Span<const ChatMessage> messages,
                                        bool add_generation_prompt = true);
// RenderChat's text.
absl::StatusOr<std::string> ApplyChatTemplate(const Tokenizer& tokenizer,
                                              absl::Span<const ChatMessage> messages,
                                              bool add_generation_prompt = true);

}  // namespace medusa
