#pragma once
// One request's generation on an Engine, start to end: the engine's decoding loop
// (EngineCore) with this request alone. Prefill runs in chunks over the paged KV cache,
// then decoding step by step, streaming text as it becomes final.
//
// Every decoding step verifies a Medusa tree in one forward pass: the root (the token
// chosen last step) plus the heads' candidates, each attending to the cached context and
// its own ancestors; the longest acceptable path is kept, its K/V compacted into place, and
// one more token comes from the base model. Plain decoding is the same loop with a tree of
// only the root.

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/generate/request.h"

namespace medusa {

// Generates with Medusa when the engine has heads and the request allows it, else
// plainly: the same loop either way. Nothing else may use the engine meanwhile.
absl::StatusOr<GenerationResult> Generate(Engine& engine, const GenerationRequest& request,
                                          const StreamCallback& on_text = nullptr,
                                          const GenerateHooks& hooks = {});

}  // namespace medusa
