// Stop strings in streamed text: the matcher against a brute-force reference on random
// text fed in random pieces, and TextStream against the whole decoded text cut at its
// first stop string, with the real stories260K tokenizer.

#include "engine/generate/text_stream.h"

#include <algorithm>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "engine/generate/stop_string_matcher.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"
#include "gtest/gtest.h"

namespace medusa {
namespace {

std::string RandomText(std::mt19937& rng, std::string_view alphabet, int length) {
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::string s;
  for (int i = 0; i < length; ++i) s += alphabet[pick(rng)];
  return s;
}

// Where the earliest stop string in `text` begins (brute force).
std::optional<size_t> FirstStop(const std::string& text, const std::vector<std::string>& stops) {
  std::optional<size_t> first;
  for (const std::string& stop : stops) {
    const size_t at = text.find(stop);
    if (at != std::string::npos) first = first ? std::min(*first, at) : at;
  }
  return first;
}

// The longest suffix of `text` that is a proper prefix of a stop string (brute force).
size_t HeldBack(const std::string& text, const std::vector<std::string>& stops) {
  size_t held = 0;
  for (const std::string& stop : stops) {
    for (size_t n = std::min(stop.size() - 1, text.size()); n > held; --n) {
      if (std::string_view(text).ends_with(std::string_view(stop).substr(0, n))) held = n;
    }
  }
  return held;
}

TEST(StopStringMatcher, AgreesWithBruteForceOnRandomPieces) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const std::string_view alphabet = trial % 2 ? "ab" : "abc";
    std::vector<std::string> stops;
    for (int i = 0, n = 1 + trial % 4; i < n; ++i) stops.push_back(RandomText(rng, alphabet, 1 + rng() % 6));
    StopStringMatcher matcher(stops);
    std::string text;
    for (int piece = 0; piece < 12; ++piece) {
      const std::string more = RandomText(rng, alphabet, rng() % 4);
      const std::optional<size_t> before = FirstStop(text, stops);
      ASSERT_FALSE(before.has_value());  // the loop ends at the first stop
      std::optional<uint64_t> found = matcher.Feed(more);
      text += more;
      const std::optional<size_t> expected = FirstStop(text, stops);
      ASSERT_EQ(found.has_value(), expected.has_value()) << "text " << text;
      if (expected) {
        EXPECT_EQ(*found, *expected) << "text " << text;
        break;
      }
      ASSERT_EQ(matcher.held_back(), HeldBack(text, stops)) << "text " << text;
    }
  }
}

TEST(StopStringMatcher, IgnoresEmptyStopStrings) {
  StopStringMatcher matcher({"", "xy"});
  EXPECT_FALSE(matcher.Feed("abc").has_value());
  EXPECT_EQ(matcher.held_back(), 0u);
  EXPECT_EQ(matcher.Feed("zzx").value_or(99), 99u);
  EXPECT_EQ(matcher.held_back(), 1u);
  EXPECT_EQ(matcher.Feed("y").value_or(99), 5u);
}

// Long stop strings that share long prefixes with the text (the hold-back's worst case)
// still match exactly.
TEST(StopStringMatcher, LongOverlappingStopStrings) {
  const std::string stop = std::string(255, 'a') + "b";
  StopStringMatcher matcher(std::vector<std::string>(16, stop));
  std::string text(1000, 'a');
  EXPECT_FALSE(matcher.Feed(text).has_value());
  EXPECT_EQ(matcher.held_back(), 255u);
  EXPECT_EQ(matcher.Feed("b").value_or(0), 1000u - 255u);
}

class TextStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        LoadLlama2cTokenizer(std::string(MEDUSA_SOURCE_DIR) + "/models/stories260K/tok512.bin", 512);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

// Streamed text equals the decoded text up to the first stop string (looked for after
// every token), and no stop string is ever streamed, whatever the stop strings and
// wherever tokens split them.
TEST_F(TextStreamTest, StreamsTheDecodedTextUpToTheFirstStopString) {
  std::mt19937 rng(11);
  const std::vector<std::string> words = {"Once", " upon", " a",    " time", ",",       " the", " cat", " sat",
                                          ".",    "\n",    " Lily", " said", " \"hi\"", " é",   " ☃"};
  for (int trial = 0; trial < 300; ++trial) {
    std::string source;
    for (int i = 0; i < 30; ++i) source += words[rng() % words.size()];
    const std::vector<int32_t> ids = tokenizer_->Encode(source, /*add_bos=*/true);
    // The text each token completes; a stream stops at the first token after which the
    // text holds a stop string, and cuts at the earliest one it holds.
    std::vector<std::string> pieces;
    {
      StreamingDetokenizer detokenizer(*tokenizer_, ids[0]);
      for (size_t i = 1; i < ids.size(); ++i) pieces.push_back(detokenizer.Push(ids[i]));
      pieces.back() += detokenizer.Flush();
    }
    const std::string full = absl::StrJoin(pieces, "");
    std::vector<std::string> stops;
    for (int i = 0, n = trial % 5; i < n; ++i) {
      const size_t at = rng() % full.size(), length = 1 + rng() % 12;
      std::string stop = full.substr(at, length);
      if (i == 3) stop += "never in the text";
      stops.push_back(stop);
    }
    std::string expected;
    std::optional<size_t> cut;
    for (const std::string& piece : pieces) {
      expected += piece;
      if ((cut = FirstStop(expected, stops))) break;
    }
    // A stop string cut out of the middle of a character stops the stream at that character.
    if (cut) {
      while (*cut > 0 && (static_cast<unsigned char>(expected[*cut]) & 0xC0) == 0x80) --*cut;
      expected.resize(*cut);
    }

    TextStream stream(*tokenizer_, stops, /*stop_ids=*/{}, ids[0]);
    std::string streamed;
    bool stopped = false;
    for (size_t i = 1; i < ids.size() && !stopped; ++i) {
      stopped = stream.Push(ids[i]);
      streamed += stream.TakeReady();
      ASSERT_TRUE(std::string_view(expected).starts_with(streamed))
          << "streamed \"" << streamed << "\" is not a prefix of \"" << expected << "\"; stops: \""
          << absl::StrJoin(stops, "\", \"") << "\"";
    }
    streamed += stream.TakeRest();
    EXPECT_EQ(streamed, expected) << "source \"" << source << "\"";
    EXPECT_EQ(stopped, cut.has_value());
  }
}

// A stop string that is not valid UTF-8 (engine callers may pass raw bytes) can begin inside
// a character; what the stream holds back then starts at that character, so every chunk is
// whole characters. Found by tests/fuzz/text_stream_fuzz.
TEST_F(TextStreamTest, ChunksStayWholeCharactersWhenAStopStringStartsMidCharacter) {
  const std::vector<int32_t> ids = tokenizer_->Encode("Once upon a \xc2\xbd time \xe2\x98\x83 cat", /*add_bos=*/true);
  TextStream stream(*tokenizer_, {"\xbd tX", "\x98\x83 cX"}, /*stop_ids=*/{}, ids[0]);
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) {
    ASSERT_FALSE(stream.Push(ids[i]));
    const std::string chunk = stream.TakeReady();
    for (size_t at = 0; at < chunk.size();) {
      const unicode::DecodedChar c = unicode::DecodeUtf8(chunk, at);
      ASSERT_TRUE(c.valid) << "chunk \"" << chunk << "\" splits a character at byte " << at;
      at += c.length;
    }
    streamed += chunk;
  }
  streamed += stream.TakeRest();
  EXPECT_EQ(streamed, "Once upon a \xc2\xbd time \xe2\x98\x83 cat");
}

}  // namespace
}  // namespace medusa
