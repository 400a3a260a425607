#pragma once
// The Medusa heads' math written plainly in float32, one hidden state at a time: the
// reference the backends' heads are tested against.

#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/model/medusa_heads_weights.h"

namespace medusa {

// For each of the first out.size() / vocab heads, the residual blocks on `hidden` [dim]
// then the projection (the head's own, else `base_classifier` [vocab, dim]); row k of `out`
// gets head k's logits. Computing fewer heads than loaded is allowed (a tree uses only as
// many heads as it is deep). `scratch` ((heads + 1) * dim floats, grown on first use) keeps
// repeated calls free of allocation; nullptr uses a temporary.
// InvalidArgument when sizes disagree (hidden != dim, out not a multiple of vocab or more
// rows than heads, base_classifier not [vocab, dim] when the heads need it).
absl::Status ComputeHeadLogits(const MedusaHeadsWeights& weights, absl::Span<const float> base_classifier,
                               absl::Span<const float> hidden, absl::Span<float> out,
                               std::vector<float>* scratch = nullptr);

// Hydra head `head` (weights.kind kHydra) on one tree path, in float64: its first block on
// [hidden; embedding rows of path_tokens] (head + 1 tokens), its other blocks, then the
// projection (its own, else `base_classifier`), into `out` [vocab]. `embedding` is the model's
// input embeddings [vocab, dim]. InvalidArgument when sizes disagree.
absl::Status ComputeHydraHeadLogits(const MedusaHeadsWeights& weights, absl::Span<const float> base_classifier,
                                    absl::Span<const float> embedding, absl::Span<const float> hidden,
                                    absl::Span<const int32_t> path_tokens, int head, std::vector<double>* out);

}  // namespace medusa
