// Throughput of the server's scheduler on SmolLM2-135M, without gRPC: tokens per second
// for 1, 4 and 16 concurrent greedy chat requests (64 tokens each, AlpacaEval prompts),
// decoding plainly, with random heads verifying a chain, and with the shipped heads and
// `--tree auto`.
//
//   scheduler_throughput_bench   (from the repository root, after scripts/setup.sh)

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/scheduler/scheduler.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "nlohmann/json.hpp"
#include "tests/support/random_heads.h"

namespace {

std::string SourcePath(const std::string& relative) { return std::string(MEDUSA_SOURCE_DIR) + "/" + relative; }

void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "scheduler_throughput_bench: %s\n", std::string(status.message()).c_str());
    std::exit(1);
  }
}

template <typename T>
T Must(absl::StatusOr<T> value) {
  Check(value.status());
  return *std::move(value);
}

std::vector<std::string> AlpacaPrompts(size_t count, size_t max_chars) {
  std::ifstream in(SourcePath("data/alpaca_eval.json"));
  std::vector<std::string> prompts;
  for (const auto& record : nlohmann::json::parse(in)) {
    const std::string text = record["instruction"];
    if (text.size() <= max_chars) prompts.push_back(text);
    if (prompts.size() == count) break;
  }
  return prompts;
}

struct Mode {
  const char* name;
  std::string heads, tree;
  bool random_heads;
  bool use_medusa;
};

void Measure(const Mode& mode, const std::vector<std::string>& prompts) {
  medusa::EngineOptions options;
  options.model_path = SourcePath("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
  options.heads_path = mode.heads;
  if (!mode.heads.empty()) options.tree = mode.tree;
  std::unique_ptr<medusa::Engine> engine = Must(medusa::Engine::Create(options));
  if (mode.random_heads) {
    const medusa::MedusaTree tree = Must(medusa::LoadTree(mode.tree, 5));
    Check(engine->SetMedusa(medusa::RandomMedusaHeads(engine->config(), 5, 1, false, 7, 0.05f), tree));
  }
  for (const int concurrency : {1, 4, 16}) {
    int steps = 0, medusa_steps = 0;
    medusa::SchedulerOptions scheduler_options;
    scheduler_options.step_observer = [&](const medusa::StepReport& s) {
      if (s.batch_size == 0) return;
      ++steps;
      medusa_steps += s.medusa;
    };
    medusa::Scheduler scheduler(*engine, scheduler_options);
    const int count = concurrency == 1 ? 4 : concurrency;
    std::vector<std::future<absl::StatusOr<medusa::GenerationResult>>> results;
    std::vector<std::promise<absl::StatusOr<medusa::GenerationResult>>> promises(count);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < count; ++i) {
      medusa::GenerationRequest r;
      r.prompt_ids = Must(medusa::EncodePrompt(engine->tokenizer(), prompts[i], true));
      r.max_tokens = 64;
      r.ignore_eos = true;
      r.use_medusa = mode.use_medusa;
      results.push_back(promises[i].get_future());
      medusa::RequestCallbacks callbacks;
      callbacks.on_done = [&promises, i](absl::StatusOr<medusa::GenerationResult> r) {
        promises[i].set_value(std::move(r));
      };
      Must(scheduler.Submit(std::move(r), std::move(callbacks)));
      if (concurrency == 1) results.back().wait();  // one at a time
    }
    int tokens = 0;
    for (auto& f : results) tokens += Must(f.get()).new_tokens();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-28s concurrency %2d: %4d tokens in %6.2f s = %6.1f tokens/s; %d decode steps (%d Medusa)\n",
                mode.name, concurrency, tokens, seconds, tokens / seconds, steps, medusa_steps);
  }
}

}  // namespace

int main() {
  const std::vector<std::string> prompts = AlpacaPrompts(16, 200);
  if (prompts.size() != 16) {
    std::fprintf(stderr, "scheduler_throughput_bench: data/alpaca_eval.json is missing (run scripts/setup.sh)\n");
    return 1;
  }
  const Mode modes[] = {
      {"plain", "", "", false, false},
      {"random heads, chain(4)", "", "chain", true, true},
      {"shipped heads, tree auto", SourcePath("heads/SmolLM2-135M-Instruct.medusa.safetensors"), "auto", false, true},
  };
  for (const Mode& mode : modes) Measure(mode, prompts);
  return 0;
}
