// `medusa bench`: keeps N streams busy on a medusa-server and reports throughput and
// latency percentiles.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/generator_client.h"
#include "tools/prompts.h"

namespace medusa::tools {
namespace {

// The q-quantile (0..1) of `values`, linearly interpolated; 0 when empty.
double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double position = q * (values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - below) * (values[above] - values[below]);
}

}  // namespace

int RunBench(const BenchCommand& command) {
  const std::string& file = command.prompts_file;
  absl::StatusOr<std::vector<PromptSpec>> prompts = ReadPromptsFile(file);
  if (!prompts.ok()) return Fail(prompts.status());
  if (prompts->empty()) return Fail(absl::InvalidArgumentError(file + " has no prompts"));
  const int concurrency = command.concurrency;
  const int total = command.requests > 0 ? command.requests : static_cast<int>(prompts->size());
  std::vector<v1::GenerateRequest> requests;
  for (const PromptSpec& spec : *prompts) requests.push_back(RequestFor(spec, command.chat, command.request));

  absl::StatusOr<std::unique_ptr<v1::Generator::Stub>> connected = Connect(command.server);
  if (!connected.ok()) return Fail(connected.status());
  std::unique_ptr<v1::Generator::Stub> stub = std::move(*connected);
  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<double> ttft, itl, e2e;
  int64_t new_tokens = 0, steps = 0;
  int errors = 0;
  std::string first_error;
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        absl::StatusOr<StreamResult> r = RunStream(*stub, requests[i % requests.size()]);
        std::lock_guard<std::mutex> lock(mu);
        if (!r.ok()) {
          if (errors++ == 0) first_error = std::string(r.status().message());
          continue;
        }
        ttft.push_back(r->ttft_ms);
        e2e.push_back(r->e2e_ms);
        itl.insert(itl.end(), r->itl_ms.begin(), r->itl_ms.end());
        new_tokens += r->finish.usage().generated_tokens();
        steps += r->finish.usage().decoding_steps();
      }
    });
  }
  for (std::thread& t : workers) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (errors > 0) std::fprintf(stderr, "medusa bench: %d requests failed; the first: %s\n", errors, first_error.c_str());

  nlohmann::json summary = {
      {"requests", total},
      {"errors", errors},
      {"concurrency", concurrency},
      {"medusa", !command.request.no_medusa},
      {"seconds", seconds},
      {"new_tokens", new_tokens},
      {"tokens_per_second", seconds > 0 ? new_tokens / seconds : 0.0},
      {"acceleration_rate", steps > 0 ? double(new_tokens) / steps : 0.0},
      {"ttft_ms_p50", Quantile(ttft, 0.5)},
      {"ttft_ms_p99", Quantile(ttft, 0.99)},
      {"itl_ms_p50", Quantile(itl, 0.5)},
      {"itl_ms_p99", Quantile(itl, 0.99)},
      {"e2e_ms_p50", Quantile(e2e, 0.5)},
      {"e2e_ms_p99", Quantile(e2e, 0.99)},
  };
  if (command.json) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::printf(
        "%d requests (%d errors) at concurrency %d in %.2f s: %lld new tokens, %.1f tokens/s, %.2f tokens/step\n"
        "TTFT p50 %.1f ms p99 %.1f ms; inter-token p50 %.2f ms p99 %.2f ms; end-to-end p50 %.1f ms p99 %.1f ms\n",
        total, errors, concurrency, seconds, static_cast<long long>(new_tokens),
        summary["tokens_per_second"].get<double>(), summary["acceleration_rate"].get<double>(),
        summary["ttft_ms_p50"].get<double>(), summary["ttft_ms_p99"].get<double>(),
        summary["itl_ms_p50"].get<double>(), summary["itl_ms_p99"].get<double>(),
        summary["e2e_ms_p50"].get<double>(), summary["e2e_ms_p99"].get<double>());
  }
  return errors > 0 ? 1 : 0;
}

}  // namespace medusa::tools
