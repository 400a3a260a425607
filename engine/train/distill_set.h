#pragma once
// Self-distillation data for Medusa heads: the frozen model's final-normed hidden
// states with the tokens that followed them.

#include <cstdint>
#include <vector>

namespace medusa {

struct DistillSet {
  int dim = 0;
  int num_heads = 0;             // targets per row
  std::vector<float> hidden;     // [rows, dim]: hidden state h_t at position t
  std::vector<int32_t> targets;  // [rows, num_heads]: head k (0-based) must predict x[t+k+2]; -1 past the text's end
  int rows() const { return dim > 0 ? static_cast<int>(hidden.size() / dim) : 0; }
};

}  // namespace medusa
