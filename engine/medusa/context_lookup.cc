#include "engine/medusa/context_lookup.h"

#include <algorithm>

namespace medusa {

ContextLookup::ContextLookup(int min_ngram, int max_ngram)
    : min_ngram_(std::clamp(min_ngram, 1, kMaxNgram)),
      max_ngram_(std::clamp(max_ngram, min_ngram_, kMaxNgram)),
      last_end_(kMaxNgram) {}

bool ContextLookup::Key(absl::Span<const int32_t> context, int last, int n, uint64_t* key) {
  *key = 0;
  for (int i = last - n + 1; i <= last; ++i) {
    const int32_t id = context[i];
    if (id < 0 || id >= (1 << kIdBits)) return false;
    *key = (*key << kIdBits) | static_cast<uint64_t>(id);
  }
  return true;
}

void ContextLookup::Index(absl::Span<const int32_t> context, int end) {
  for (; indexed_ < end; ++indexed_) {
    for (int n = min_ngram_; n <= max_ngram_ && n <= indexed_ + 1; ++n) {
      uint64_t key;
      if (Key(context, indexed_, n, &key)) last_end_[n - 1][key] = indexed_;
    }
  }
}

std::vector<int32_t> ContextLookup::Propose(absl::Span<const int32_t> context, int max_tokens) {
  const int size = static_cast<int>(context.size());
  if (size < indexed_) {  // not an extension of the last context: index this one afresh
    indexed_ = 0;
    last_end_.assign(kMaxNgram, {});
  }
  // Occurrences ending before the last token: the suffix itself must not match itself.
  Index(context, size - 1);
  if (max_tokens <= 0 || size == 0) return {};
  for (int n = std::min(max_ngram_, size); n >= min_ngram_; --n) {
    uint64_t key;
    if (!Key(context, size - 1, n, &key)) continue;
    const auto found = last_end_[n - 1].find(key);
    if (found == last_end_[n - 1].end()) continue;
    // What followed it, up to the context's end (a repeat may overlap the suffix itself).
    const int from = found->second + 1;
    const int count = std::min(max_tokens, size - from);
    return std::vector<int32_t>(context.begin() + from, context.begin() + from + count);
  }
  return {};
}

}  // namespace medusa
