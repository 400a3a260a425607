#include "engine/generate/text_stream.h"

#include <algorithm>
#include <utility>

namespace medusa {
namespace {

// `at`, or the start of the character `at` falls inside. A stop string that is not valid
// UTF-8 (engine callers may pass raw bytes) can begin inside a character; cutting or holding
// back from the character's start keeps every chunk whole characters.
size_t CharacterStart(std::string_view text, size_t at) {
  while (at > 0 && at < text.size() && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
  return at;
}

}  // namespace

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
                       absl::Span<const int32_t> stop_ids, int32_t previous)
    : detokenizer_(tokenizer, previous), stop_strings_(std::move(stop_strings)),
      stop_ids_(stop_ids.begin(), stop_ids.end()) {}

bool TextStream::Push(int32_t id) {
  if (stopped_) return true;
  if (stop_ids_.contains(id)) {
    Append(detokenizer_.Flush());
    stopped_ = true;
    return true;
  }
  Append(detokenizer_.Push(id));
  return stopped_;
}

void TextStream::Append(std::string_view text) {
  pending_.append(text);
  if (std::optional<uint64_t> stop = stop_strings_.Feed(text)) {
    // Held-back text keeps every partial match in pending_, so the stop string begins there.
    pending_.resize(CharacterStart(pending_, *stop - taken_));
    stopped_ = true;
  }
}

std::string TextStream::TakeReady() {
  const size_t ready =
      stopped_ ? pending_.size()
               : CharacterStart(pending_, pending_.size() - std::min(pending_.size(), stop_strings_.held_back()));
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  taken_ += ready;
  return out;
}

std::string TextStream::TakeRest() {
  if (!stopped_) Append(detokenizer_.Flush());
  taken_ += pending_.size();
  return std::exchange(pending_, std::string());
}

}  // namespace medusa
