#pragma once
// Medusa heads (Cai et al. 2024, "Medusa: Simple LLM Inference Acceleration Framework
// with Multiple Decoding Heads"): K extra decoding heads on the base model's last,
// final-normed hidden state h. When the base model's logits at h give the next token
// x[t+1], head k's logits propose x[t+k+2].
//
// Each head is `num_layers` residual blocks, h <- h + SiLU(W h + b) with W [dim, dim]
// and b [dim], followed by a vocabulary projection [vocab, dim]: the head's own, or the
// base model's classifier when the checkpoint has none.
//
// File layout (the reference implementation's, FasterDecoding/Medusa): a safetensors
// file whose tensors are `{head}.{layer}.linear.weight` [dim, dim],
// `{head}.{layer}.linear.bias` [dim] for each residual block and `{head}.{num_layers}.weight`
// [vocab, dim] for the head's own projection. Heads and layers are counted from the names.
//
// Draft vocabulary (our extension, in the file's __metadata__, ignored by other readers):
// `medusa_draft_vocab` lists, most frequent first, the token ids the heads may propose,
// as decimal numbers separated by spaces. Heads only propose; the base model decides, so
// proposing from the tokens the model actually writes (a few thousand cover >99% of them)
// changes no output, and projecting onto those rows instead of the whole vocabulary makes
// a head's projection several times cheaper (FR-Spec, Zhao et al. 2025, does the same for
// drafters). Absent: the whole vocabulary.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

struct MedusaResBlock {
  std::vector<float> weight;  // [dim, dim], y = W x (nn.Linear layout)
  std::vector<float> bias;    // [dim]
};

struct MedusaHead {
  std::vector<MedusaResBlock> blocks;  // num_layers
  std::vector<float> projection;       // [vocab, dim]; empty: the base model's classifier
};

struct MedusaHeadsWeights {
  int num_heads = 0;
  int num_layers = 0;  // residual blocks per head (the same for every head)
  int dim = 0;
  int vocab = 0;
  std::vector<MedusaHead> heads;  // num_heads
  // Token ids the heads propose from, distinct, in [0, vocab), most frequent first; empty:
  // every token.
  std::vector<int32_t> draft_vocab;

  // Whether the heads carry their own vocabulary projections (all do or none do).
  bool has_projection() const { return !heads.empty() && !heads[0].projection.empty(); }
  // Checks that every vector has the size the counts say (InvalidArgument naming
  // the head, the block and the field otherwise).
  absl::Status Validate() const;
};

// Loads heads in the reference layout and checks them against the base model:
// InvalidArgument naming the tensor for a wrong shape (dim or vocab), a missing
// weight or bias, a gap in the head or layer numbering, heads with different
// numbers of blocks, a projection that only some heads have, or a tensor name
// outside the layout. A combined checkpoint whose head tensors carry the
// `medusa_head.` prefix is read too (its other tensors are ignored).
absl::StatusOr<MedusaHeadsWeights> LoadMedusaHeads(const std::string& path,
                                                   const ModelConfig& config);
absl::StatusOr<MedusaHeadsWeights> LoadMedusaHeads(const safetensors::File& file,
                                                   const ModelConfig& config);

// Writes heads in the same layout (tensors in the reference's state-dict order),
// as F32, F16 or BF16. `metadata` (a JSON object, or null) goes into __metadata__;
// `medusa_num_heads` and `medusa_num_layers` are added unless given.
absl::Status SaveMedusaHeads(const std::string& path, const MedusaHeadsWeights& weights,
                             const nlohmann::json& metadata,
                             safetensors::DType dtype = safetensors::DType::kF32);

// The metadata key of the draft vocabulary, and its text form ("12 5 873 ...").
inline constexpr char kDraftVocabKey[] = "medusa_draft_vocab";
std::string DraftVocabToText(absl::Span<const int32_t> ids);
// InvalidArgument naming the problem (not a number, out of [0, vocab), repeated).
absl::StatusOr<std::vector<int32_t>> DraftVocabFromText(const std::string& text, int vocab);

// The smallest set of most frequent tokens whose counts cover `coverage` (0..1] of all
// counted tokens, and at least `min_size` of them (never more than the vocabulary), most
// frequent first, ties (unseen tokens among them) by smaller id. `counts` has one entry
// per vocabulary id.
std::vector<int32_t> ChooseDraftVocab(absl::Span<const int64_t> counts, double coverage, int min_size);

// Heads with seeded random weights, every value drawn from N(0, scale^2), for tests
// and benchmarks. Same arguments, same weights.
MedusaHeadsWeights RandomMedusaHeads(const ModelConfig& config, int num_heads, int num_layers,
                                     bool with_projection, uint64_t seed, float scale);

// ------------------------------------------------------------------ head math

// A plain float32 reference of the heads' math on the CPU: for each of the first
// out.size() / vocab heads, the residual blocks on `hidden` [dim] then the projection
// (the head's own, else `base_classifier` [vocab, dim]); row k of `out` gets head k's
// logits. It is the tests' reference and the CPU path until the backend gets a fused
// version (the lead moves the hot path into kernels/ then; this stays as the reference).
// Computing fewer heads than loaded is allowed: a tree uses only as many heads as it is
// deep. `scratch` ((heads + 1) * dim floats, grown on first use) keeps repeated calls free of
// allocation; pass nullptr to use a temporary.
// InvalidArgument when sizes disagree (hidden != dim, out not a multiple of vocab or
// more rows than heads, base_classifier not [vocab, dim] when the heads need it).
absl::Status ComputeHeadLogits(const MedusaHeadsWeights& weights,
                               absl::Span<const float> base_classifier,
                               absl::Span<const float> hidden, absl::Span<float> out,
                               std::vector<float>* scratch = nullptr);

}  // namespace medusa
