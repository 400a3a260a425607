#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace medusa {

absl::Status SamplingParams::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrFormat("temperature must be a finite number >= 0, got %g", temperature));
  }
  if (top_k < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("top_k must be >= 0, got %d", top_k));
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrFormat("top_p must be in (0, 1], got %g", top_p));
  }
  return absl::OkStatus();
}

int32_t Argmax(absl::Span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

float Sampler::Uniform() {
  // 24 random bits: exactly representable floats in [0, 1).
  return static_cast<float>(rng_() >> 40) * (1.0f / 16777216.0f);
}

void Sampler::KeepCandidates(absl::Span<const float> logits) {
  const int n = static_cast<int>(logits.size());
  candidates_.resize(n);
  for (int i = 0; i < n; ++i) candidates_[i] = {logits[i], i};

  // Highest logits first, ties to the lower id; only as many as a filter needs are put in order.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t sorted = 0;  // candidates_[0, sorted) are the largest, in order
  if (params_.top_k > 0 && params_.top_k < n) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + params_.top_k, candidates_.end(), by_logit);
    candidates_.resize(params_.top_k);
    sorted = candidates_.size();
  }

  // Softmax with temperature over every candidate, in double for a stable normalizer.
  const double inv_t = 1.0 / params_.temperature;
  double max_logit = candidates_.front().first;
  for (const auto& c : candidates_) max_logit = std::max<double>(max_logit, c.first);
  auto weight = [&](float logit) { return std::exp((logit - max_logit) * inv_t); };

  // Nucleus: the smallest prefix, in logit order, whose mass reaches top_p. It is usually a
  // small part of the vocabulary, so the order grows a block at a time (each block the next
  // largest, by partial sort) instead of sorting all 50k logits for every token.
  if (params_.top_p < 1.0f) {
    double sum = 0.0;
    for (const auto& c : candidates_) sum += weight(c.first);
    size_t cut = candidates_.size();
    double mass = 0.0;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (i == sorted) {
        const size_t next = std::min(candidates_.size(), std::max<size_t>(64, 4 * sorted));
        std::partial_sort(candidates_.begin() + sorted, candidates_.begin() + next, candidates_.end(), by_logit);
        sorted = next;
      }
      mass += static_cast<float>(weight(candidates_[i].first)) / sum;
      if (mass >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    candidates_.resize(cut);
  }
  double kept = 0.0;
  for (auto& c : candidates_) {
    c.first = static_cast<float>(weight(c.first));
    kept += c.first;
  }
  for (auto& c : candidates_) c.first = static_cast<float>(c.first / kept);
}

int32_t Sampler::Sample(absl::Span<const float> logits) {
  if (params_.greedy()) return Argmax(logits);
  KeepCandidates(logits);
  float r = Uniform();
  float cumulative = 0.0f;
  for (const auto& [p, id] : candidates_) {
    cumulative += p;
    if (r < cumulative) return id;
  }
  return candidates_.back().second;  // rounding left r just above the total
}

void Sampler::Distribution(absl::Span<const float> logits, std::vector<float>* probs) {
  probs->assign(logits.size(), 0.0f);
  if (params_.greedy()) {
    (*probs)[Argmax(logits)] = 1.0f;
    return;
  }
  KeepCandidates(logits);
  for (const auto& [p, id] : candidates_) (*probs)[id] = p;
}

}  // namespace medusa
