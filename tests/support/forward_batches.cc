#include "tests/support/forward_batches.h"

#include <random>

namespace medusa::testing {

std::vector<int> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int> t(n);
  for (int& x : t) x = d(rng);
  return t;
}

void AddCausal(kernels::ForwardBatch* batch, int seq, const std::vector<int>& tokens, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    kernels::BatchToken t;
    t.token = tokens[i];
    t.position = i;
    t.seq = seq;
    t.kv_index = i;
    t.attend_prefix = i + 1;
    batch->output_rows.push_back(static_cast<int32_t>(batch->tokens.size()));
    batch->tokens.push_back(t);
  }
}

}  // namespace medusa::testing
