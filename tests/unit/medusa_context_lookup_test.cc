// Context lookup drafts (prompt lookup decoding): checked against a brute-force search of the
// context for the longest earlier occurrence of its suffix, on random contexts grown a few
// tokens at a time as decoding grows them.

#include <algorithm>
#include <random>
#include <vector>

#include "engine/medusa/context_lookup.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace medusa {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// The definition: for n from max_ngram down to min_ngram, the last earlier position where the
// context's final n tokens also end; what follows it, at most max_tokens, up to the end.
std::vector<int32_t> BruteForce(const std::vector<int32_t>& c, int min_ngram, int max_ngram, int max_tokens) {
  const int size = static_cast<int>(c.size());
  for (int n = std::min(max_ngram, size); n >= min_ngram; --n) {
    for (int end = size - 2; end >= n - 1; --end) {
      if (std::equal(c.end() - n, c.end(), c.begin() + end - n + 1)) {
        const int from = end + 1, count = std::min(max_tokens, size - from);
        return std::vector<int32_t>(c.begin() + from, c.begin() + from + count);
      }
    }
  }
  return {};
}

TEST(ContextLookup, ProposesWhatFollowedTheLongestRepeatedSuffix) {
  ContextLookup lookup(/*min_ngram=*/2, /*max_ngram=*/3);
  // "5 6 7 8 ... 5 6" -> 7 8 9; the 3-gram "4 5 6" did not occur before, the 2-gram did.
  std::vector<int32_t> context = {1, 5, 6, 7, 8, 9, 4, 5, 6};
  EXPECT_THAT(lookup.Propose(context, 3), ElementsAre(7, 8, 9));
  EXPECT_THAT(lookup.Propose(context, 1), ElementsAre(7));
  // The longer match wins over a more recent shorter one: "3 5 6" occurred at the start.
  std::vector<int32_t> longer = {3, 5, 6, 1, 2, 5, 6, 7, 3, 5, 6};
  ContextLookup fresh(2, 3);
  EXPECT_THAT(fresh.Propose(longer, 2), ElementsAre(1, 2));
  // A continuation stops at the context's end: a loop proposes itself.
  ContextLookup loop(2, 3);
  EXPECT_THAT(loop.Propose({9, 9, 9}, 4), ElementsAre(9));
  EXPECT_THAT(loop.Propose({9, 9, 9, 9, 9}, 4), ElementsAre(9));
}

TEST(ContextLookup, ProposesNothingWithoutARepeat) {
  ContextLookup lookup(2, 3);
  EXPECT_THAT(lookup.Propose({}, 4), IsEmpty());
  EXPECT_THAT(lookup.Propose({1}, 4), IsEmpty());
  EXPECT_THAT(lookup.Propose({1, 2, 3, 4}, 4), IsEmpty());
  EXPECT_THAT(lookup.Propose({1, 2, 3, 4, 1}, 4), IsEmpty()) << "a 1-gram is below min_ngram";
  EXPECT_THAT(lookup.Propose({1, 2, 3, 4, 1, 2}, 0), IsEmpty()) << "no tokens asked for";
  // Ids that do not fit a key are never matched (nor crash).
  ContextLookup odd(2, 3);
  EXPECT_THAT(odd.Propose({-1, 1 << 22, 5, -1, 1 << 22}, 2), IsEmpty());
}

TEST(ContextLookup, MatchesBruteForceOnGrowingContexts) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int vocab = 2 + trial % 12;  // small vocabularies repeat often
    const int min_ngram = 1 + trial % 3, max_ngram = std::max(min_ngram, 1 + (trial / 3) % 3);
    ContextLookup lookup(min_ngram, max_ngram);
    std::vector<int32_t> context;
    while (context.size() < 120) {
      const int grow = 1 + static_cast<int>(rng() % 4);  // a step accepts a few tokens at once
      for (int i = 0; i < grow; ++i) context.push_back(static_cast<int32_t>(rng() % vocab));
      const int max_tokens = static_cast<int>(rng() % 6);
      ASSERT_EQ(lookup.Propose(context, max_tokens), BruteForce(context, min_ngram, max_ngram, max_tokens))
          << "trial " << trial << ", context of " << context.size();
    }
  }
}

}  // namespace
}  // namespace medusa
