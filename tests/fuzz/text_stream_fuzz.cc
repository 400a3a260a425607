// Streaming with stop strings (TextStream): text encoded by a real tokenizer, its ids
// streamed one at a time, the ready text taken after each. The input is a flags byte
// (bit 0: byte-level BPE instead of SentencePiece; bit 1: parse special tokens; bits 2-3:
// how many stop strings, 0-3), the stop strings (Reader::String), then the text.
// Invariants, each a trap when broken:
//  - every chunk streamed is valid UTF-8, and together they are a prefix of the decoded
//    text (Decode, invalid bytes as U+FFFD) up to the first stop token;
//  - no stop string occurs in what was streamed;
//  - where the stream stopped short of the text, a stop string starts right there, and
//    the stream reported stopping; where no stop string occurs, everything was streamed.

#include <algorithm>
#include <string>
#include <vector>

#include "engine/generate/text_stream.h"
#include "engine/tokenizer/unicode.h"
#include "fuzz_support.h"

namespace {

bool IsValidUtf8(std::string_view text) {
  std::string copy;
  return medusa::unicode::AppendValidUtf8(text, /*final=*/true, &copy) == text.size() && copy == text;
}

// The text a stream of `ids` shows when it runs to its end: the decoded bytes up to the
// first stop token, invalid UTF-8 replaced.
std::string ExpectedText(const medusa::Tokenizer& tokenizer, const std::vector<int32_t>& ids,
                         const std::vector<int32_t>& stop_ids) {
  auto end = std::find_first_of(ids.begin(), ids.end(), stop_ids.begin(), stop_ids.end());
  const std::string raw = tokenizer.Decode(std::vector<int32_t>(ids.begin(), end));
  std::string text;
  medusa::unicode::AppendValidUtf8(raw, /*final=*/true, &text);
  return text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::Reader reader(data, size);
  const uint8_t flags = reader.Byte();
  const medusa::Tokenizer& tokenizer = (flags & 1) ? medusa::fuzz::BpeTokenizer() : medusa::fuzz::SpmTokenizer();
  std::vector<std::string> stops;
  for (int i = 0; i < ((flags >> 2) & 3); ++i) stops.push_back(reader.String(64));
  const std::vector<int32_t> ids = tokenizer.Encode(reader.Rest(), /*add_bos=*/false, /*parse_special=*/flags & 2);
  const std::vector<int32_t> stop_ids = tokenizer.stop_ids();

  medusa::TextStream stream(tokenizer, stops, stop_ids, /*previous=*/-1);
  std::string streamed;
  for (int32_t id : ids) {
    const bool stopped = stream.Push(id);
    const std::string chunk = stream.TakeReady();
    FUZZ_CHECK(IsValidUtf8(chunk), "a streamed chunk that is not valid UTF-8");
    streamed += chunk;
    if (stopped) break;
  }
  streamed += stream.TakeRest();

  const std::string expected = ExpectedText(tokenizer, ids, stop_ids);
  FUZZ_CHECK(expected.starts_with(streamed), "streamed text that is not the decoded text");
  for (const std::string& stop : stops) {
    FUZZ_CHECK(stop.empty() || streamed.find(stop) == std::string::npos, "a stop string leaked into the output");
  }
  const std::string_view rest = std::string_view(expected).substr(streamed.size());
  // The stream stops at a stop string, or at the start of the character a stop string that is
  // not valid UTF-8 begins inside.
  size_t first_char = rest.empty() ? 0 : 1;
  while (first_char < rest.size() && (static_cast<unsigned char>(rest[first_char]) & 0xC0) == 0x80) ++first_char;
  const bool stop_here = std::any_of(stops.begin(), stops.end(), [&](const std::string& stop) {
    if (stop.empty()) return false;
    for (size_t at = 0; at < std::max<size_t>(first_char, 1); ++at) {
      if (rest.substr(at).starts_with(stop)) return true;
    }
    return false;
  });
  if (!rest.empty()) FUZZ_CHECK(stop_here && stream.stopped(), "the stream stopped short without a stop string");
  const bool any_stop = std::any_of(stops.begin(), stops.end(), [&](const std::string& stop) {
    return !stop.empty() && expected.find(stop) != std::string::npos;
  });
  if (!any_stop) FUZZ_CHECK(streamed == expected, "text lost with no stop string in it");
  return 0;
}
