// In-process A/B: the same greedy chat prompts decoded by Generate (the loop of `medusa
// generate`) and by the Scheduler (the loop of the server, without gRPC), alternating
// request by request on one Engine, so that machine noise falls on both alike.
//
//   scheduler_vs_generate_bench --model M --heads H --prompts P.jsonl [--rounds 3]
//                               [--max-tokens 128] [--threads 2]
//
// Prints decode tokens/s of each path per round and the median ratio.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/scheduler/scheduler.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "tools/prompts.h"

namespace {

using namespace medusa;

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    std::exit(1);
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, heads, prompts_path;
  int rounds = 3, max_tokens = 128, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") model = value;
    else if (flag == "--heads") heads = value;
    else if (flag == "--prompts") prompts_path = value;
    else if (flag == "--rounds") rounds = std::atoi(value.c_str());
    else if (flag == "--max-tokens") max_tokens = std::atoi(value.c_str());
    else if (flag == "--threads") threads = std::atoi(value.c_str());
  }
  if (model.empty() || heads.empty() || prompts_path.empty()) {
    std::fprintf(stderr, "usage: scheduler_vs_generate_bench --model M --heads H --prompts P.jsonl [--rounds 3]\n");
    return 1;
  }
  EngineOptions options;
  options.model_path = model;
  options.heads_path = heads;
  options.tree = "auto";
  options.backend.threads = threads;
  options.kv_cache_bytes = 1024ll << 20;
  auto engine = Engine::Create(options);
  Check(engine.status());

  // The CLI's prompt files: {"prompt": ...} lines as one chat turn, {"messages": [...]} as they are.
  absl::StatusOr<std::vector<tools::PromptSpec>> prompts = tools::ReadPromptsFile(prompts_path);
  Check(prompts.status());
  std::vector<GenerationRequest> requests;
  for (const tools::PromptSpec& spec : *prompts) {
    auto ids = spec.messages.empty() ? EncodePrompt((*engine)->tokenizer(), spec.text, /*chat=*/true)
                                     : EncodeChat((*engine)->tokenizer(), spec.messages);
    Check(ids.status());
    GenerationRequest r;
    r.prompt_ids = *std::move(ids);
    r.max_tokens = max_tokens;
    requests.push_back(std::move(r));
  }

  auto through_scheduler = [&](const GenerationRequest& request) {
    Scheduler scheduler(**engine, SchedulerOptions{});
    std::promise<absl::StatusOr<GenerationResult>> done;
    RequestCallbacks callbacks;
    callbacks.on_text = [](absl::Span<const int32_t>, std::string_view) {};
    callbacks.on_done = [&](absl::StatusOr<GenerationResult> r) { done.set_value(std::move(r)); };
    Check(scheduler.Submit(request, std::move(callbacks)).status());
    auto result = done.get_future().get();
    Check(result.status());
    return *result;
  };
  auto alone = [&](const GenerationRequest& request) {
    auto result = Generate(**engine, request, [](absl::Span<const int32_t>, std::string_view) {});
    Check(result.status());
    return *result;
  };

  std::vector<double> ratios;
  for (int round = 0; round < rounds; ++round) {
    double tokens[2] = {0, 0}, seconds[2] = {0, 0};
    for (size_t i = 0; i < requests.size(); ++i) {
      for (int k = 0; k < 2; ++k) {
        const int path = (i + round) % 2 == 0 ? k : 1 - k;  // 0: Generate, 1: Scheduler
        GenerationResult r = path == 0 ? alone(requests[i]) : through_scheduler(requests[i]);
        tokens[path] += r.new_tokens() - 1;
        seconds[path] += r.decode_seconds;
      }
    }
    const double g = tokens[0] / seconds[0], s = tokens[1] / seconds[1];
    ratios.push_back(s / g);
    std::printf("round %d: generate %.1f tok/s, scheduler %.1f tok/s, ratio %.3f\n", round + 1, g, s, s / g);
  }
  std::printf("median scheduler / generate: %.3f\n", Median(ratios));
  return 0;
}
