#include "engine/generate/text_stream.h"

#include <algorithm>


namespace medusa {

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
                       absl::Span<const int32_t> stop_ids, int32_t previous)
    : detokenizer_(tokenizer, previous), stop_strings_(std::move(stop_strings)),
      stop_ids_(stop_ids.begin(), stop_ids.end()) {
  std::erase_if(stop_strings_, [](const std::string& s) { return s.empty(); });
}

bool TextStream::Push(int32_t id) {
  if (stopped_) return true;
  if (stop_ids_.contains(id)) {
    pending_ += detokenizer_.Flush();
    stopped_ = true;
    return true;
  }
  pending_ += detokenizer_.Push(id);
  stopped_ = CutAtStopString();
  return stopped_;
}

bool TextStream::CutAtStopString() {
  size_t cut = std::string::npos;
  for (const std::string& stop : stop_strings_) cut = std::min(cut, pending_.find(stop));
  if (cut == std::string::npos) return false;
  pending_.resize(cut);
  return true;
}

size_t TextStream::HeldBack() const {
  size_t held = 0;
  for (const std::string& stop : stop_strings_) {
    size_t longest = std::min(stop.size() - 1, pending_.size());
    for (size_t n = longest; n > held; --n) {
      if (std::string_view(pending_).ends_with(std::string_view(stop).substr(0, n))) {
        held = n;
        break;
      }
    }
  }
  return held;
}

std::string TextStream::TakeReady() {
  size_t ready = stopped_ ? pending_.size() : pending_.size() - HeldBack();
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string TextStream::TakeRest() {
  if (!stopped_) {
    pending_ += detokenizer_.Flush();
    CutAtStopString();
  }
  return std::exchange(pending_, std::string());
}

}  // namespace medusa
