#include "engine/tokenizer/tokenizer.h"

#include "engine/tokenizer/unicode.h"

namespace medusa {

std::string Tokenizer::Decode(absl::Span<const int32_t> ids) const {
  std::string text;
  int32_t previous = -1;
  for (int32_t id : ids) {
    text += TokenBytes(id, previous);
    previous = id;
  }
  return text;
}

std::string StreamingDetokenizer::Push(int32_t id) {
  pending_ += tokenizer_.TokenBytes(id, previous_);
  previous_ = id;
  std::string out;
  const size_t consumed = unicode::AppendValidUtf8(pending_, /*final=*/false, &out);
  pending_.erase(0, consumed);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  unicode::AppendValidUtf8(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace medusa
