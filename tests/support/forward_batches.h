#pragma once
// Forward batches for backend tests: random tokens and causal runs of one sequence.

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace medusa::testing {

// n token ids uniform in [0, vocab); same seed, same ids.
std::vector<int> RandomTokens(int n, int vocab, uint32_t seed);

// Causal tokens [first, first + count) of sequence `seq` (positions and KV slots equal to
// their index), appended to `batch`, each an output row.
void AddCausal(kernels::ForwardBatch* batch, int seq, const std::vector<int>& tokens, int first, int count);

}  // namespace medusa::testing
