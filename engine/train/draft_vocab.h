#pragma once
// Choosing the heads' draft vocabulary (engine/medusa/heads_file.h says what it is and how
// it is stored): the tokens the model writes most.

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace medusa {

// The smallest set of most frequent tokens whose counts cover `coverage` (0..1] of all
// counted tokens, and at least `min_size` of them (never more than the vocabulary), most
// frequent first, ties (unseen tokens among them) by smaller id. `counts` has one entry
// per vocabulary id.
std::vector<int32_t> ChooseDraftVocab(absl::Span<const int64_t> counts, double coverage, int min_size);

}  // namespace medusa
