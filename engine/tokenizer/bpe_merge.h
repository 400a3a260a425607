#pragma once
// The merge loop shared by both BPE flavours: SentencePiece (best score first)
// and byte-level BPE (lowest merge rank first). Symbols form a linked list over
// a text; a heap holds candidate pairs and stale entries are skipped when popped,
// so a text of n symbols costs O(n log n) instead of the naive O(n^2).

#include <algorithm>
#include <cstdint>
#include <vector>

namespace medusa::tokenizer_internal {

struct MergeSymbol {
  int32_t start = 0;   // byte offset in the text being merged
  int32_t length = 0;  // bytes; 0 once merged into the left neighbour
  int32_t prev = -1;
  int32_t next = -1;
  int32_t id = -1;      // token id of the symbol's bytes, -1 if none
  bool frozen = false;  // never merged (SentencePiece user-defined pieces)
};

struct MergeCandidate {
  double priority = 0;  // lower merges first
  int32_t left = 0;
  int32_t right = 0;
  int32_t length = 0;  // left.length + right.length when pushed: detects staleness
  int32_t merged_id = -1;
};

// Links symbols[0..n) into one list.
inline void LinkSymbols(std::vector<MergeSymbol>* symbols) {
  const int32_t n = static_cast<int32_t>(symbols->size());
  for (int32_t i = 0; i < n; ++i) {
    (*symbols)[i].prev = i - 1;
    (*symbols)[i].next = i + 1 < n ? i + 1 : -1;
  }
}

// Repeatedly merges the adjacent pair with the lowest priority (ties: the
// leftmost), as both SentencePiece and Hugging Face's BPE do.
// `find(left, right, &candidate)` returns false when the pair cannot merge and
// otherwise sets candidate.priority and candidate.merged_id.
template <typename FindMerge>
void ApplyMerges(std::vector<MergeSymbol>* symbols, std::vector<MergeCandidate>* heap,
                 const FindMerge& find) {
  auto& sym = *symbols;
  const auto worse = [](const MergeCandidate& a, const MergeCandidate& b) {
    return a.priority > b.priority || (a.priority == b.priority && a.left > b.left);
  };
  const auto try_push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || sym[left].frozen || sym[right].frozen) return;
    MergeCandidate c;
    c.left = left;
    c.right = right;
    c.length = sym[left].length + sym[right].length;
    if (!find(sym[left], sym[right], &c)) return;
    heap->push_back(c);
    std::push_heap(heap->begin(), heap->end(), worse);
  };

  heap->clear();
  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    try_push(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  }
  while (!heap->empty()) {
    std::pop_heap(heap->begin(), heap->end(), worse);
    const MergeCandidate c = heap->back();
    heap->pop_back();
    MergeSymbol& left = sym[c.left];
    MergeSymbol& right = sym[c.right];
    // Lengths only grow and starts never move, so an unchanged total length of
    // two still-adjacent live symbols means the pair is exactly as pushed.
    if (left.length == 0 || right.length == 0 || left.next != c.right ||
        left.length + right.length != c.length) {
      continue;
    }
    left.length += right.length;
    left.id = c.merged_id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = c.left;
    right.length = 0;
    try_push(left.prev, c.left);
    try_push(c.left, left.next);
  }
}

}  // namespace medusa::tokenizer_internal
