#include "engine/train/distill_set.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace medusa {

std::vector<int32_t> DistillSet::Path(int r, int k) const {
  std::vector<int32_t> path = {next[r]};
  for (int j = 0; j < k; ++j) path.push_back(targets[static_cast<size_t>(r) * num_heads + j]);
  return path;
}

int DistillSet::RowAhead(int r, int j) const {
  if (j < 1 || num_heads < 2 || !has_next() || r < 0 || r + j >= rows()) return -1;
  for (int a = r; a < r + j; ++a) {
    const int32_t* here = targets.data() + static_cast<size_t>(a) * num_heads;
    const int32_t* after = here + num_heads;
    if (next[a + 1] != here[0] || !std::equal(after, after + num_heads - 1, here + 1)) return -1;
  }
  return r + j;
}

absl::Status DistillSet::Append(absl::Span<const float> row_hidden, absl::Span<const int32_t> row_targets,
                                int32_t row_next) {
  if (static_cast<int64_t>(row_hidden.size()) != dim ||
      static_cast<int64_t>(row_targets.size()) != num_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distill set: a row has ", row_hidden.size(), " hidden values and ", row_targets.size(),
        " targets, expected dim ", dim, " and num_heads ", num_heads));
  }
  if (rows() > 0 && has_next() != (row_next >= 0)) {
    return absl::InvalidArgumentError("distill set: rows with and without next tokens cannot be mixed");
  }
  hidden.insert(hidden.end(), row_hidden.begin(), row_hidden.end());
  targets.insert(targets.end(), row_targets.begin(), row_targets.end());
  if (row_next >= 0) next.push_back(row_next);
  return absl::OkStatus();
}

absl::Status DistillSet::Append(const DistillSet& other) {
  if (hidden.empty() && targets.empty()) {
    dim = other.dim;
    num_heads = other.num_heads;
  }
  if (other.dim != dim || other.num_heads != num_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distill set: cannot append a set with dim ", other.dim, " and num_heads ",
        other.num_heads, " to one with dim ", dim, " and num_heads ", num_heads));
  }
  if (rows() > 0 && other.rows() > 0 && has_next() != other.has_next()) {
    return absl::InvalidArgumentError("distill set: cannot append a set with next tokens to one without, or back");
  }
  hidden.insert(hidden.end(), other.hidden.begin(), other.hidden.end());
  targets.insert(targets.end(), other.targets.begin(), other.targets.end());
  next.insert(next.end(), other.next.begin(), other.next.end());
  return absl::OkStatus();
}

absl::Status DistillSet::Validate(int vocab) const {
  if (dim <= 0 || num_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distill set: dim is ", dim, " and num_heads ", num_heads, "; both must be positive"));
  }
  if (hidden.size() % static_cast<size_t>(dim) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("distill set: hidden has ", hidden.size(),
                                                   " values, not a multiple of dim ", dim));
  }
  const size_t want_targets = static_cast<size_t>(rows()) * num_heads;
  if (targets.size() != want_targets) {
    return absl::InvalidArgumentError(absl::StrCat(
        "distill set: targets has ", targets.size(), " values, expected rows ", rows(),
        " x num_heads ", num_heads, " = ", want_targets));
  }
  if (!next.empty() && next.size() != static_cast<size_t>(rows())) {
    return absl::InvalidArgumentError(
        absl::StrCat("distill set: next has ", next.size(), " tokens, expected none or one per row (", rows(), ")"));
  }
  for (size_t r = 0; r < next.size(); ++r) {
    if (next[r] < 0 || (vocab > 0 && next[r] >= vocab)) {
      return absl::InvalidArgumentError(
          absl::StrCat("distill set: row ", r, " has next token ", next[r], ", outside [0, vocab ", vocab, ")"));
    }
  }
  if (vocab > 0) {
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i] < -1 || targets[i] >= vocab) {
        return absl::InvalidArgumentError(absl::StrCat(
            "distill set: row ", i / num_heads, " head ", i % num_heads, " has target ",
            targets[i], ", outside [-1, vocab ", vocab, ")"));
      }
    }
  }
  return absl::OkStatus();
}

void DistillSet::KeepFirst(int keep) {
  if (keep < 0 || keep >= rows()) return;
  const bool with_next = has_next();
  hidden.resize(static_cast<size_t>(keep) * dim);
  targets.resize(static_cast<size_t>(keep) * num_heads);
  if (with_next) next.resize(keep);
}

std::pair<DistillSet, DistillSet> DistillSet::Split(double held_out_fraction,
                                                    uint64_t seed) const {
  const int n = rows();
  const double fraction = std::clamp(held_out_fraction, 0.0, 1.0);
  const int held = static_cast<int>(std::lround(fraction * n));
  // A seeded Fisher-Yates prefix picks the held-out rows (written out, so the choice
  // does not depend on the standard library's distributions).
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < held; ++i) {
    const int j = i + static_cast<int>(rng() % static_cast<uint64_t>(n - i));
    std::swap(order[i], order[j]);
  }
  std::vector<bool> is_held(n, false);
  for (int i = 0; i < held; ++i) is_held[order[i]] = true;
  std::pair<DistillSet, DistillSet> out;
  for (DistillSet* part : {&out.first, &out.second}) {
    part->dim = dim;
    part->num_heads = num_heads;
  }
  for (int r = 0; r < n; ++r) {
    DistillSet& part = is_held[r] ? out.second : out.first;
    part.hidden.insert(part.hidden.end(), hidden.begin() + static_cast<size_t>(r) * dim,
                       hidden.begin() + static_cast<size_t>(r + 1) * dim);
    part.targets.insert(part.targets.end(), targets.begin() + static_cast<size_t>(r) * num_heads,
                        targets.begin() + static_cast<size_t>(r + 1) * num_heads);
    if (!next.empty()) part.next.push_back(next[r]);
  }
  return out;
}

}  // namespace medusa
