#pragma once
// Self-distillation data for Medusa heads: the frozen model's final-normed hidden
// states with the tokens that followed them.

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace medusa {

struct DistillSet {
  int dim = 0;
  int num_heads = 0;             // targets per row
  std::vector<float> hidden;     // [rows, dim]: hidden state h_t at position t
  std::vector<int32_t> targets;  // [rows, num_heads]: head k (0-based) must predict x[t+k+2]; -1 past the text's end
  // [rows]: x[t+1], the base model's own next token, which begins every Hydra head's path
  // (head k reads next, then targets 0 .. k-1). Empty in sets made without it (Medusa heads
  // do not need it).
  std::vector<int32_t> next;
  int rows() const { return dim > 0 ? static_cast<int>(hidden.size() / dim) : 0; }

  // Row r's hidden state [dim] and targets [num_heads].
  absl::Span<const float> Hidden(int r) const {
    return absl::MakeConstSpan(hidden).subspan(static_cast<size_t>(r) * dim, dim);
  }
  absl::Span<const int32_t> Targets(int r) const {
    return absl::MakeConstSpan(targets).subspan(static_cast<size_t>(r) * num_heads, num_heads);
  }

  bool has_next() const { return rows() > 0 && next.size() == static_cast<size_t>(rows()); }
  // Hydra head k's path tokens for row r [k + 1]: next, then targets 0 .. k-1 (needs has_next()).
  std::vector<int32_t> Path(int r, int k) const;

  // The row of the same text `j` >= 1 positions after row r's, or -1 when the text ends first.
  // Self-distillation writes each answer's rows consecutively (Append and KeepFirst keep that
  // order; Split's parts do not), so row r + 1 continues row r exactly when their tokens agree
  // wherever they overlap: its next token is r's first target, and its targets are r's from the
  // second on. At the end of an answer that fails, as r's second target is past the end (-1)
  // while every row has a first target. Needs has_next() and num_heads >= 2 (-1 otherwise).
  int RowAhead(int r, int j) const;

  // Appends one row (`row_next` < 0: a set without next tokens). InvalidArgument when the
  // sizes are not dim / num_heads or rows with and without next tokens are mixed.
  absl::Status Append(absl::Span<const float> row_hidden, absl::Span<const int32_t> row_targets, int32_t row_next = -1);
  // Appends every row of `other` (same dim and num_heads; an empty set takes other's shape).
  absl::Status Append(const DistillSet& other);

  // Checks the shape: positive dim and num_heads, hidden a whole number of rows,
  // targets [rows, num_heads], every target in [-1, vocab) (vocab <= 0: not checked), next
  // empty or [rows] with every token in [0, vocab).
  // InvalidArgument naming the field, or the row and head of a bad target.
  absl::Status Validate(int vocab = 0) const;

  // Keeps the first `rows` rows (all of them when there are no more).
  void KeepFirst(int rows);

  // Splits off a held-out set: a seeded random choice of round(fraction * rows) rows
  // (order kept in both parts). Returns {train, held_out}.
  std::pair<DistillSet, DistillSet> Split(double held_out_fraction, uint64_t seed) const;
};

}  // namespace medusa
