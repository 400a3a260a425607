#include "kernels/model/medusa_heads_weights.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(absl::StrCat("Medusa heads: ", what)); }

}  // namespace

absl::Status MedusaHeadsWeights::Validate() const {
  if (num_heads < 0 || num_layers < 0 || dim <= 0 || vocab <= 0) {
    return Bad(absl::StrCat("bad sizes: num_heads ", num_heads, ", num_layers ", num_layers, ", dim ", dim,
                            ", vocab ", vocab));
  }
  if (static_cast<int>(heads.size()) != num_heads) {
    return Bad(absl::StrCat("num_heads is ", num_heads, " but there are ", heads.size(), " heads"));
  }
  if (kind == HeadKind::kHydra && num_layers < 1) return Bad("Hydra heads need at least one block");
  const size_t vd = static_cast<size_t>(vocab) * dim;
  for (int h = 0; h < num_heads; ++h) {
    const MedusaHead& head = heads[h];
    if (static_cast<int>(head.blocks.size()) != num_layers) {
      return Bad(absl::StrCat("head ", h, " has ", head.blocks.size(), " blocks, expected ", num_layers));
    }
    for (int l = 0; l < num_layers; ++l) {
      const size_t dd = static_cast<size_t>(dim) * BlockInputs(h, l);
      if (head.blocks[l].weight.size() != dd || head.blocks[l].bias.size() != static_cast<size_t>(dim)) {
        return Bad(absl::StrCat("head ", h, " block ", l, ": weight has ", head.blocks[l].weight.size(),
                                " values (expected ", dd, "), bias ", head.blocks[l].bias.size(), " (expected ",
                                dim, ")"));
      }
    }
    if (head.projection.size() != (has_projection() ? vd : 0)) {
      return Bad(absl::StrCat("head ", h, " projection has ", head.projection.size(), " values, expected ",
                              has_projection() ? vd : 0, " (all heads have a projection or none does)"));
    }
  }
  if (absl::Status draft = CheckDraftVocab(draft_vocab, vocab); !draft.ok()) return Bad(std::string(draft.message()));
  return absl::OkStatus();
}

absl::Status CheckDraftVocab(absl::Span<const int32_t> ids, int vocab) {
  std::vector<bool> seen(std::max(vocab, 0), false);
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("draft vocabulary entry ", i, " is token ", id, ", outside the vocabulary of ", vocab));
    }
    if (seen[id]) return absl::InvalidArgumentError(absl::StrCat("draft vocabulary lists token ", id, " twice"));
    seen[id] = true;
  }
  return absl::OkStatus();
}

absl::Status MedusaHeadsWeights::ValidateFor(int model_dim, int model_vocab) const {
  RETURN_IF_ERROR(Validate());
  if (dim != model_dim || vocab != model_vocab) {
    return Bad(absl::StrCat("they are for dim ", dim, ", vocab ", vocab, "; the model has dim ", model_dim,
                            ", vocab ", model_vocab));
  }
  return absl::OkStatus();
}

}  // namespace medusa
