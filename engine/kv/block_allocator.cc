#include "engine/kv/block_allocator.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_format.h"

namespace medusa::kv {

BlockAllocator::BlockAllocator(int num_blocks) : in_use_(num_blocks, false) {
  free_list_.reserve(num_blocks);
  // Hand out low ids first.
  for (int b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
}

absl::Status BlockAllocator::Allocate(int count, std::vector<int32_t>* out) {
  if (count < 0) return absl::InvalidArgumentError("negative block count");
  if (count > num_free()) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "KV cache exhausted: %d blocks needed, %d of %d free", count, num_free(), num_blocks()));
  }
  for (int i = 0; i < count; ++i) {
    int32_t block = free_list_.back();
    free_list_.pop_back();
    in_use_[block] = true;
    out->push_back(block);
  }
  return absl::OkStatus();
}

void BlockAllocator::Free(absl::Span<const int32_t> blocks) {
  for (int32_t block : blocks) {
    if (block < 0 || block >= num_blocks() || !in_use_[block]) {
      std::fprintf(stderr, "KV block %d freed twice or never allocated\n", block);
      std::abort();
    }
    in_use_[block] = false;
    free_list_.push_back(block);
  }
}

SequenceKv::SequenceKv(BlockAllocator* allocator, int block_size)
    : allocator_(allocator), block_size_(block_size) {}

SequenceKv::~SequenceKv() { Release(); }

SequenceKv::SequenceKv(SequenceKv&& other) noexcept
    : allocator_(other.allocator_),
      block_size_(other.block_size_),
      length_(std::exchange(other.length_, 0)),
      blocks_(std::move(other.blocks_)) {
  other.blocks_.clear();
}

SequenceKv& SequenceKv::operator=(SequenceKv&& other) noexcept {
  if (this != &other) {
    Release();
    allocator_ = other.allocator_;
    block_size_ = other.block_size_;
    length_ = std::exchange(other.length_, 0);
    blocks_ = std::move(other.blocks_);
    other.blocks_.clear();
  }
  return *this;
}

absl::Status SequenceKv::Reserve(int slots) {
  int needed = (slots + block_size_ - 1) / block_size_ - static_cast<int>(blocks_.size());
  if (needed <= 0) return absl::OkStatus();
  return allocator_->Allocate(needed, &blocks_);
}

void SequenceKv::SetLength(int length) {
  if (length < 0 || length > capacity()) {
    std::fprintf(stderr, "SequenceKv::SetLength(%d) outside capacity %d\n", length, capacity());
    std::abort();
  }
  length_ = length;
}

void SequenceKv::Truncate(int length) {
  if (length < 0) length = 0;
  if (length < length_) length_ = length;
  size_t keep = static_cast<size_t>((length + block_size_ - 1) / block_size_);
  if (keep < blocks_.size()) {
    allocator_->Free(absl::MakeConstSpan(blocks_).subspan(keep));
    blocks_.resize(keep);
  }
}

void SequenceKv::Release() {
  if (allocator_ != nullptr && !blocks_.empty()) allocator_->Free(blocks_);
  blocks_.clear();
  length_ = 0;
}

}  // namespace medusa::kv
