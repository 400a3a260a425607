#pragma once
// Bookkeeping of the paged KV cache: a fixed pool of blocks, handed out to
// sequences and returned when they shrink or end. The storage itself lives in
// the compute backend; this class only decides which block ids are whose.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace medusa::kv {

class BlockAllocator {
 public:
  explicit BlockAllocator(int num_blocks);
  BlockAllocator(const BlockAllocator&) = delete;
  BlockAllocator& operator=(const BlockAllocator&) = delete;

  // Allocates `count` blocks, all or none: ResourceExhausted when fewer are free.
  absl::Status Allocate(int count, std::vector<int32_t>* out);
  // Returns blocks to the pool. Freeing a block that is not allocated is a bug
  // in the caller and aborts (it would hand one block to two sequences).
  void Free(absl::Span<const int32_t> blocks);

  int num_blocks() const { return static_cast<int>(in_use_.size()); }
  int num_free() const { return static_cast<int>(free_list_.size()); }
  int num_used() const { return num_blocks() - num_free(); }

 private:
  std::vector<int32_t> free_list_;  // LIFO: recently freed blocks are reused first (warm in cache)
  std::vector<bool> in_use_;
};

// The logical KV slots of one sequence: slot i lives in block table()[i / block_size],
// at offset i % block_size. Frees its blocks when destroyed.
class SequenceKv {
 public:
  SequenceKv(BlockAllocator* allocator, int block_size);
  ~SequenceKv();
  SequenceKv(SequenceKv&& other) noexcept;
  SequenceKv& operator=(SequenceKv&& other) noexcept;
  SequenceKv(const SequenceKv&) = delete;
  SequenceKv& operator=(const SequenceKv&) = delete;

  // Slots holding valid K/V.
  int length() const { return length_; }
  // Slots backed by blocks (>= length).
  int capacity() const { return static_cast<int>(blocks_.size()) * block_size_; }
  int block_size() const { return block_size_; }
  absl::Span<const int32_t> block_table() const { return blocks_; }

  // Makes sure slots [0, slots) are backed by blocks, allocating all or nothing.
  absl::Status Reserve(int slots);
  // Marks slots [0, length) valid. Requires length <= capacity().
  void SetLength(int length);
  // Drops slots past `length` and returns the blocks no longer needed.
  void Truncate(int length);
  // Returns every block.
  void Release();

  int32_t BlockOf(int slot) const { return blocks_[slot / block_size_]; }
  int32_t OffsetOf(int slot) const { return slot % block_size_; }

 private:
  BlockAllocator* allocator_;
  int block_size_;
  int length_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace medusa::kv
