// Backend::KvBlocksFor's default: the budget over the bytes of one block.

#include <algorithm>
#include <limits>

#include "absl/strings/str_format.h"
#include "kernels/backend.h"

namespace medusa::kernels {

absl::StatusOr<int> Backend::KvBlocksFor(int64_t budget_bytes, int block_size) const {
  if (budget_bytes < 0) return absl::InvalidArgumentError("a KV cache budget cannot be negative");
  if (block_size <= 0) return absl::InvalidArgumentError("a KV block holds at least one token");
  const int64_t budget = budget_bytes > 0 ? budget_bytes : kDefaultKvBudgetBytes;
  const int64_t block_bytes = static_cast<int64_t>(KvBytesPerBlock(block_size));
  const int64_t blocks = budget / block_bytes;
  if (blocks < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("KV cache budget of %d bytes holds no block (one block takes %d bytes)", budget, block_bytes));
  }
  return static_cast<int>(std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max()));
}

}  // namespace medusa::kernels
