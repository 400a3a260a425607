// The batch, slot and head top-k rules of kernels/backend.h, which every backend checks.

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace medusa::kernels {

absl::Status ValidateBatch(const ForwardBatch& batch, int vocab_size, const KvCacheSpec& kv) {
  const int64_t bs = kv.block_size;
  for (size_t s = 0; s < batch.block_tables.size(); ++s) {
    const auto& table = batch.block_tables[s];
    for (size_t b = 0; b < table.size(); ++b) {
      if (table[b] < 0 || table[b] >= kv.num_blocks) {
        return absl::InvalidArgumentError(absl::StrCat("block_tables[", s, "][", b, "] = ", table[b],
                                                       " is not a block id in [0, ", kv.num_blocks, ")"));
      }
    }
  }
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    const BatchToken& t = batch.tokens[i];
    // The message is only built on failure: no formatting per token on the hot path.
    auto bad = [i](const auto&... parts) {
      return absl::InvalidArgumentError(absl::StrCat("tokens[", i, "].", parts...));
    };
    if (t.token < 0 || t.token >= vocab_size) {
      return bad("token = ", t.token, " is outside the vocabulary [0, ", vocab_size, ")");
    }
    if (t.position < 0) return bad("position = ", t.position, " < 0");
    if (t.seq < 0 || static_cast<size_t>(t.seq) >= batch.block_tables.size()) {
      return bad("seq = ", t.seq, " has no block table (", batch.block_tables.size(), " tables)");
    }
    const int64_t capacity = static_cast<int64_t>(batch.block_tables[t.seq].size()) * bs;
    if (t.kv_index < 0 || t.kv_index >= capacity) {
      return bad("kv_index = ", t.kv_index, " is outside the sequence's capacity [0, ", capacity, ")");
    }
    if (t.attend_prefix < 0 || t.attend_prefix > capacity) {
      return bad("attend_prefix = ", t.attend_prefix, " is outside [0, ", capacity, "]");
    }
    if (t.extra_begin < 0 || t.extra_count < 0 ||
        static_cast<int64_t>(t.extra_begin) + t.extra_count > static_cast<int64_t>(batch.extra_indices.size())) {
      return bad("extra_begin/extra_count = ", t.extra_begin, "/", t.extra_count, " exceed extra_indices (",
                 batch.extra_indices.size(), ")");
    }
    if (t.attend_prefix + t.extra_count == 0) {
      return bad("attends to nothing (attend_prefix and extra_count are 0)");
    }
    for (int e = t.extra_begin; e < t.extra_begin + t.extra_count; ++e) {
      const int32_t index = batch.extra_indices[e];
      if (index < 0 || index >= capacity) {
        return absl::InvalidArgumentError(absl::StrCat("extra_indices[", e, "] = ", index, " (of tokens[", i,
                                                       "]) is outside the sequence's capacity [0, ", capacity, ")"));
      }
    }
  }
  for (size_t r = 0; r < batch.output_rows.size(); ++r) {
    const int32_t row = batch.output_rows[r];
    if (row < 0 || static_cast<size_t>(row) >= batch.tokens.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("output_rows[", r, "] = ", row, " is not a token row [0, ", batch.tokens.size(), ")"));
    }
  }
  const int64_t outputs = batch.tokens.empty() ? 0 : static_cast<int64_t>(batch.output_rows.size());
  for (size_t q = 0; q < batch.row_stats.size(); ++q) {
    const RowStatsQuery& query = batch.row_stats[q];
    if (query.output_row < 0 || query.output_row >= outputs) {
      return absl::InvalidArgumentError(absl::StrCat("row_stats[", q, "].output_row = ", query.output_row,
                                                     " is not an output row [0, ", outputs, ")"));
    }
    if (!(query.temperature > 0.0f) || !std::isfinite(query.temperature)) {
      return absl::InvalidArgumentError(
          absl::StrCat("row_stats[", q, "].temperature = ", query.temperature, " is not a positive number"));
    }
  }
  for (size_t q = 0; q < batch.logit_queries.size(); ++q) {
    const LogitQuery& query = batch.logit_queries[q];
    if (query.output_row < 0 || query.output_row >= outputs) {
      return absl::InvalidArgumentError(absl::StrCat("logit_queries[", q, "].output_row = ", query.output_row,
                                                     " is not an output row [0, ", outputs, ")"));
    }
    if (query.token < 0 || query.token >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("logit_queries[", q, "].token = ", query.token,
                                                     " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckHeadTopK(absl::Span<const int> topk, int loaded_heads, int draft_size) {
  if (topk.size() > static_cast<size_t>(loaded_heads)) {
    return absl::InvalidArgumentError(
        absl::StrCat("asked for the top tokens of ", topk.size(), " Medusa heads; ", loaded_heads, " are loaded"));
  }
  for (size_t h = 0; h < topk.size(); ++h) {
    if (topk[h] < 1 || topk[h] > draft_size) {
      return absl::InvalidArgumentError(absl::StrCat("head ", h, "'s top-", topk[h], " is outside [1, ", draft_size,
                                                     "] (the heads' draft vocabulary)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckKvSlot(const KvCacheSpec& kv, int32_t block, int32_t slot, const char* what) {
  if (block < 0 || block >= kv.num_blocks || slot < 0 || slot >= kv.block_size) {
    return absl::InvalidArgumentError(absl::StrCat(what, " (block ", block, ", slot ", slot, ") is outside the cache (",
                                                   kv.num_blocks, " blocks of ", kv.block_size, ")"));
  }
  return absl::OkStatus();
}

}  // namespace medusa::kernels
