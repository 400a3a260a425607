#pragma once
// Medusa heads as a backend is given them (Cai et al. 2024): K extra decoding heads on the
// base model's last, final-normed hidden state h. When the base model's logits at h give
// the next token x[t+1], head k's logits propose x[t+k+2].
//
// Each head is `num_layers` residual blocks, h <- h + SiLU(W h + b) with W [dim, dim] and
// b [dim], followed by a vocabulary projection [vocab, dim]: the head's own, or the base
// model's classifier when it has none. The file format is engine/medusa/heads_file.h's.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace medusa {

struct MedusaResBlock {
  std::vector<float> weight;  // [dim, inputs] (inputs: MedusaHeadsWeights::BlockInputs), y = W x (nn.Linear layout)
  std::vector<float> bias;    // [dim]
};

struct MedusaHead {
  std::vector<MedusaResBlock> blocks;  // num_layers
  std::vector<float> projection;       // [vocab, dim]; empty: the base model's classifier
};

enum class HeadKind { kMedusa, kHydra };

struct MedusaHeadsWeights {
  HeadKind kind = HeadKind::kMedusa;
  int num_heads = 0;
  int num_layers = 0;  // residual blocks per head (the same for every head)
  int dim = 0;
  int vocab = 0;
  std::vector<MedusaHead> heads;  // num_heads
  // Token ids the heads propose from (the draft vocabulary), distinct, in [0, vocab), most
  // frequent first; empty: every token. A backend projects onto these rows only.
  std::vector<int32_t> draft_vocab;

  // Input width of head `head`'s block `layer`: dim, or (head + 2) * dim for a Hydra head's
  // first block.
  int BlockInputs(int head, int layer) const {
    return kind == HeadKind::kHydra && layer == 0 ? (head + 2) * dim : dim;
  }
  // Whether the heads carry their own vocabulary projections (all do or none do).
  bool has_projection() const { return !heads.empty() && !heads[0].projection.empty(); }
  // Checks that every vector has the size the counts say and that the draft vocabulary is
  // distinct ids inside the vocabulary: InvalidArgument naming the head, the block and the
  // field otherwise.
  absl::Status Validate() const;
  // Validate(), and that the heads fit a model of this width and vocabulary.
  absl::Status ValidateFor(int model_dim, int model_vocab) const;
};

// A draft vocabulary must list distinct ids inside [0, vocab): InvalidArgument naming the
// entry otherwise.
absl::Status CheckDraftVocab(absl::Span<const int32_t> ids, int vocab);

}  // namespace medusa
