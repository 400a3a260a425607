#include "engine/generate/generator.h"

#include "engine/scheduler/engine_core.h"
#include "kernels/base/status_macros.h"

namespace medusa {

absl::StatusOr<GenerationResult> Generate(Engine& engine, const GenerationRequest& request,
                                          const StreamCallback& on_text, const GenerateHooks& hooks) {
  StepOptions options;
  options.prefill_chunk = engine.options().prefill_chunk;
  options.max_batch = 1;
  EngineCore core(engine, options);
  RequestOptions request_options;
  request_options.on_text = on_text;
  request_options.hooks = &hooks;
  RETURN_IF_ERROR(core.Add(/*id=*/1, request, std::move(request_options)));
  for (;;) {
    std::vector<RequestOutput> ended = core.Step();
    if (!ended.empty()) return std::move(ended.front().result);
  }
}

}  // namespace medusa
