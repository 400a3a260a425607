// The cost of sampling one token on a SmolLM2-sized vocabulary (49,152 logits), per
// setting, side by side with the nucleus found by a full sort (how Sampler did it before):
// medians of per-round means, rounds alternating the two.
//
//   build/bin/sampler_bench [--rounds 15]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/sampling/sampler.h"

namespace {

using Clock = std::chrono::steady_clock;

// Logits shaped like a language model's: a few likely tokens, a long tail.
std::vector<std::vector<float>> Rows(int count, int vocab) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> rows(count, std::vector<float>(vocab));
  for (auto& row : rows) {
    for (float& l : row) l = normal(rng);
  }
  return rows;
}

// The old way: sort every logit, then cut at top_p (the baseline of the comparison).
int32_t SampleByFullSort(const std::vector<float>& logits, const medusa::SamplingParams& params, float u,
                         std::vector<std::pair<float, int32_t>>& candidates) {
  const int n = static_cast<int>(logits.size());
  candidates.resize(n);
  for (int i = 0; i < n; ++i) candidates[i] = {logits[i], i};
  std::sort(candidates.begin(), candidates.end(),
            [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  const double inv_t = 1.0 / params.temperature, max = candidates.front().first;
  double sum = 0;
  for (auto& c : candidates) sum += c.first = static_cast<float>(std::exp((c.first - max) * inv_t));
  double mass = 0, cumulative = 0;
  size_t cut = candidates.size();
  for (size_t i = 0; i < candidates.size(); ++i) {
    if ((mass += candidates[i].first / sum) >= params.top_p) {
      cut = i + 1;
      break;
    }
  }
  for (size_t i = 0; i < cut; ++i) {
    if (u * mass < (cumulative += candidates[i].first / sum)) return candidates[i].second;
  }
  return candidates[cut - 1].second;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 15;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::max(1, std::atoi(argv[i + 1]));
  }
  const std::vector<std::vector<float>> rows = Rows(16, 49152);
  constexpr int kPerRound = 32;
  struct Setting {
    const char* name;
    medusa::SamplingParams params;
  };
  const Setting settings[] = {
      {"temperature 0.7", {.temperature = 0.7f, .seed = 1}},
      {"temperature 0.7, top_p 0.95", {.temperature = 0.7f, .top_p = 0.95f, .seed = 1}},
      {"temperature 0.7, top_k 40, top_p 0.95", {.temperature = 0.7f, .top_k = 40, .top_p = 0.95f, .seed = 1}},
  };
  std::printf("ms per sampled token, 49,152-token vocabulary, median of %d rounds of %d tokens\n", rounds, kPerRound);
  for (const Setting& setting : settings) {
    medusa::Sampler sampler(setting.params);
    std::vector<std::pair<float, int32_t>> scratch;
    std::vector<double> now_ms, full_sort_ms;
    long checksum = 0;
    for (int r = 0; r < rounds; ++r) {
      auto t0 = Clock::now();
      for (int i = 0; i < kPerRound; ++i) checksum += sampler.Sample(rows[i % rows.size()]);
      auto t1 = Clock::now();
      const bool nucleus_only = setting.params.top_k == 0 && setting.params.top_p < 1.0f;
      for (int i = 0; nucleus_only && i < kPerRound; ++i) {
        checksum += SampleByFullSort(rows[i % rows.size()], setting.params, 0.5f, scratch);
      }
      auto t2 = Clock::now();
      now_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / kPerRound);
      if (nucleus_only) full_sort_ms.push_back(std::chrono::duration<double, std::milli>(t2 - t1).count() / kPerRound);
    }
    if (full_sort_ms.empty()) {
      std::printf("%-40s Sampler %.3f\n", setting.name, Median(now_ms));
    } else {
      std::printf("%-40s Sampler %.3f, full sort %.3f (%.1fx)\n", setting.name, Median(now_ms), Median(full_sort_ms),
                  Median(full_sort_ms) / Median(now_ms));
    }
    if (checksum == 42) std::puts("");  // keeps the work from being optimized away
  }
  return 0;
}
