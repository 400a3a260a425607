#pragma once
// Medusa heads files (the weights themselves: kernels/model/medusa_heads_weights.h).
//
// Layout (the reference implementation's, FasterDecoding/Medusa): a safetensors file whose
// tensors are `{head}.{layer}.linear.weight` [dim, dim], `{head}.{layer}.linear.bias` [dim]
// for each residual block and `{head}.{num_layers}.weight` [vocab, dim] for the head's own
// projection. Heads and layers are counted from the names.
//
// Draft vocabulary (our extension, in the file's __metadata__, ignored by other readers):
// `medusa_draft_vocab` lists, most frequent first, the token ids the heads may propose,
// as decimal numbers separated by spaces. Heads only propose; the base model decides, so
// proposing from the tokens the model actually writes (a few thousand cover >99% of them)
// changes no output, and projecting onto those rows instead of the whole vocabulary makes
// a head's projection several times cheaper (FR-Spec, Zhao et al. 2025, does the same for
// drafters). Absent: the whole vocabulary.
//
// Sequentially dependent (Hydra) heads (our extension, kernels/model/medusa_heads_weights.h):
// metadata `medusa_head_type` = "hydra", and the same tensor names, except that head k's first
// block `{k}.0.linear.weight` is [dim, (k + 2) * dim], its input columns h, then the
// embeddings of the path's k + 1 tokens in path order. "medusa" or absent: Medusa-1 heads. A
// reader of the reference layout refuses a Hydra file on that shape instead of misreading it.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/safetensors.h"
#include "kernels/model/config.h"
#include "kernels/model/medusa_heads_weights.h"
#include "nlohmann/json_fwd.hpp"

namespace medusa {

// Loads heads in the reference layout and checks them against the base model:
// InvalidArgument naming the tensor for a wrong shape (dim or vocab), a missing
// weight or bias, a gap in the head or layer numbering, heads with different
// numbers of blocks, a projection that only some heads have, or a tensor name
// outside the layout. A combined checkpoint whose head tensors carry the
// `medusa_head.` prefix is read too (its other tensors are ignored). A config.json beside the
// file with medusa_num_heads / medusa_num_layers (the published layout) must agree with it.
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

// A file that belongs to a heads file: its path without ".safetensors", plus `suffix`
// ("x/heads.safetensors", ".json" -> "x/heads.json").
std::string BesideHeads(const std::string& heads_path, std::string_view suffix);

// The metadata key of the head type and its values.
inline constexpr char kHeadTypeKey[] = "medusa_head_type";
inline constexpr char kHeadTypeMedusa[] = "medusa";
inline constexpr char kHeadTypeHydra[] = "hydra";

// The metadata key of the draft vocabulary, and its text form ("12 5 873 ...").
inline constexpr char kDraftVocabKey[] = "medusa_draft_vocab";
std::string DraftVocabToText(absl::Span<const int32_t> ids);
// InvalidArgument naming the problem (not a number, out of [0, vocab), repeated).
absl::StatusOr<std::vector<int32_t>> DraftVocabFromText(const std::string& text, int vocab);

}  // namespace medusa
