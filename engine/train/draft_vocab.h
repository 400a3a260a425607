#pragma once
// Choosing the heads' draft vocabulary (engine/medusa/heads_file.h says what it is and how
// it is stored): the tokens the model writes most.

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/train/distill_set.h"

namespace medusa {

// The smallest set of most frequent tokens whose counts cover `coverage` (0..1] of all
// counted tokens, and at least `min_size` of them (never more than the vocabulary), most
// frequent first, ties (unseen tokens among them) by smaller id. `counts` has one entry
// per vocabulary id.
std::vector<int32_t> ChooseDraftVocab(absl::Span<const int64_t> counts, double coverage, int min_size);

// The draft vocabulary of self-distillation rows: ChooseDraftVocab over the tokens the model
// wrote (head 0's targets, which cover every answer token but each answer's first two).
std::vector<int32_t> DraftVocabOf(const DistillSet& data, int vocab, double coverage, int min_size);

}  // namespace medusa
