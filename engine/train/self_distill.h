#pragma once
// Self-distillation data for Medusa-1 heads (Cai et al. 2024, section 3.2.1): the
// frozen model answers seed prompts itself, and every position of its answers
// gives a training row: the final-normed hidden state h_t with the tokens that
// followed it (head k learns x[t+k+2]). Heads trained on the model's own text
// predict what the model will say, which is what verification accepts.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/sampling/sampler.h"
#include "engine/train/distill_set.h"

namespace medusa {

struct SelfDistillOptions {
  int num_heads = 4;           // targets per row
  int max_new_tokens = 256;    // answer length cap per prompt
  SamplingParams sampling;     // how the model answers (temperature 0: greedy); seed + prompt index seeds each answer
  int concurrency = 16;        // answers decoded together in one batched forward pass
};

struct SelfDistillProgress {
  int prompts_done = 0;
  int prompts_total = 0;
  int64_t tokens = 0;  // generated so far
  double elapsed_seconds = 0;
};

// Answers every prompt (token ids, chat template already applied) and returns the
// rows in prompt order, whatever the concurrency. Rows start at the prompt's last
// position (whose hidden state predicts the first answer token) and end where head 0
// has no target left (one row per answer token but the last); targets past the
// answer's end are -1. An answer ends at
// a stop token (kept as a target), at max_new_tokens or at the model's context.
// A prompt that leaves no room in the context is an InvalidArgument naming it.
absl::StatusOr<DistillSet> SelfDistill(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                       const SelfDistillOptions& options,
                                       const std::function<void(const SelfDistillProgress&)>& on_progress = nullptr);

// Seed prompts from a JSON file: a list whose items are ShareGPT conversations
// ({"conversations": [{"from": "human", "value": ...}, ...]}: the first human turn),
// AlpacaEval rows ({"instruction": ...}) or plain strings. Empty and duplicate
// prompts are dropped; order is kept. Errors name the file and the item.
absl::StatusOr<std::vector<std::string>> LoadSeedPrompts(const std::string& path);

}  // namespace medusa
