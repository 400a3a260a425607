#include "engine/train/self_distill.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/generate/generator.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace medusa {
namespace {

// One answer being written: its cache, its sampler and the rows it has made.
struct Answer {
  Answer(Engine& engine, int index, const SamplingParams& sampling)
      : index(index), sampler(sampling), kv(engine.NewSequence()) {}
  int index;
  Sampler sampler;
  kv::SequenceKv kv;
  std::vector<int32_t> tokens;  // prompt and answer
  int prompt_len = 0;
  std::vector<float> hidden;    // rows from position prompt_len - 1 on
  bool done = false;
};

class Distiller {
 public:
  Distiller(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, const SelfDistillOptions& options)
      : engine_(engine),
        config_(engine.config()),
        prompts_(prompts),
        options_(options),
        stop_ids_(StopTokenIds(engine.tokenizer())),
        per_prompt_(prompts.size()) {}

  absl::StatusOr<DistillSet> Run(const std::function<void(const SelfDistillProgress&)>& on_progress);

 private:
  absl::Status Admit(int index);
  absl::Status DecodeStep();
  // Appends a sampled token; marks the answer done at a stop token or the length cap.
  void Push(Answer& answer, absl::Span<const float> logits, absl::Span<const float> hidden);
  void Finish(Answer& answer);

  Engine& engine_;
  const ModelConfig& config_;
  const std::vector<std::vector<int32_t>>& prompts_;
  const SelfDistillOptions& options_;
  const std::vector<int32_t> stop_ids_;
  std::deque<std::unique_ptr<Answer>> active_;
  std::vector<DistillSet> per_prompt_;
  kernels::ForwardBatch batch_;
  kernels::ForwardResult forward_;
  int64_t tokens_ = 0;
  int done_ = 0;
};

absl::Status Distiller::Admit(int index) {
  const std::vector<int32_t>& prompt = prompts_[index];
  const int length = static_cast<int>(prompt.size());
  if (length == 0 || length + 1 >= config_.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "seed prompt %d has %d tokens; the model's context of %d leaves no room for an answer", index,
        length, config_.max_seq_len));
  }
  SamplingParams sampling = options_.sampling;
  sampling.seed += static_cast<uint64_t>(index);
  auto answer = std::make_unique<Answer>(engine_, index, sampling);
  // The whole answer's blocks up front: a running answer never runs out of KV.
  RETURN_IF_ERROR(answer->kv.Reserve(std::min(length + options_.max_new_tokens, config_.max_seq_len)));
  answer->tokens = prompt;
  answer->prompt_len = length;
  const int chunk = engine_.options().prefill_chunk;
  for (int begin = 0; begin < length; begin += chunk) {
    const int count = std::min(chunk, length - begin);
    const bool last = begin + count == length;
    batch_.Clear();
    batch_.block_tables.push_back(answer->kv.block_table());
    for (int i = begin; i < begin + count; ++i) {
      batch_.tokens.push_back({.token = prompt[i], .position = i, .seq = 0, .kv_index = i, .attend_prefix = i + 1});
    }
    if (last) batch_.output_rows.push_back(count - 1);
    batch_.want_logits = batch_.want_hidden = last;
    RETURN_IF_ERROR(engine_.backend().Forward(batch_, &forward_));
  }
  answer->kv.SetLength(length);
  Push(*answer, forward_.logits, forward_.hidden);
  if (answer->done) {
    Finish(*answer);
  } else {
    active_.push_back(std::move(answer));
  }
  return absl::OkStatus();
}

absl::Status Distiller::DecodeStep() {
  batch_.Clear();
  for (size_t i = 0; i < active_.size(); ++i) {
    Answer& a = *active_[i];
    const int pos = static_cast<int>(a.tokens.size()) - 1;  // the newest token's K/V is written now
    RETURN_IF_ERROR(a.kv.Reserve(pos + 1));
    batch_.block_tables.push_back(a.kv.block_table());
    batch_.tokens.push_back({.token = a.tokens.back(), .position = pos, .seq = static_cast<int32_t>(i),
                             .kv_index = pos, .attend_prefix = pos + 1});
    batch_.output_rows.push_back(static_cast<int32_t>(i));
  }
  batch_.want_logits = batch_.want_hidden = true;
  RETURN_IF_ERROR(engine_.backend().Forward(batch_, &forward_));
  const size_t vocab = config_.vocab_size, dim = config_.dim;
  for (size_t i = 0; i < active_.size(); ++i) {
    Answer& a = *active_[i];
    a.kv.SetLength(static_cast<int>(a.tokens.size()));
    Push(a, absl::MakeConstSpan(forward_.logits).subspan(i * vocab, vocab),
         absl::MakeConstSpan(forward_.hidden).subspan(i * dim, dim));
  }
  for (auto it = active_.begin(); it != active_.end();) {
    if ((*it)->done) {
      Finish(**it);
      it = active_.erase(it);
    } else {
      ++it;
    }
  }
  return absl::OkStatus();
}

void Distiller::Push(Answer& answer, absl::Span<const float> logits, absl::Span<const float> hidden) {
  const int32_t token = answer.sampler.Sample(logits.first(config_.vocab_size));
  answer.hidden.insert(answer.hidden.end(), hidden.begin(), hidden.begin() + config_.dim);
  answer.tokens.push_back(token);
  ++tokens_;
  const int generated = static_cast<int>(answer.tokens.size()) - answer.prompt_len;
  answer.done = std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end() ||
                generated >= options_.max_new_tokens ||
                static_cast<int>(answer.tokens.size()) >= config_.max_seq_len;
}

// Rows t = prompt_len - 1 .. n - 3: hidden h_t, targets x[t+k+2] (-1 past the end).
// Row n - 2 would predict only the last token, which the base model does (no head
// target), so it is dropped.
void Distiller::Finish(Answer& answer) {
  const int n = static_cast<int>(answer.tokens.size());
  const int first = answer.prompt_len - 1;
  const int rows = std::max(0, n - 2 - first);
  DistillSet& set = per_prompt_[answer.index];
  set.dim = config_.dim;
  set.num_heads = options_.num_heads;
  set.hidden.assign(answer.hidden.begin(), answer.hidden.begin() + static_cast<size_t>(rows) * config_.dim);
  set.targets.resize(static_cast<size_t>(rows) * options_.num_heads);
  for (int r = 0; r < rows; ++r) {
    const int t = first + r;
    for (int k = 0; k < options_.num_heads; ++k) {
      const int target = t + k + 2;
      set.targets[static_cast<size_t>(r) * options_.num_heads + k] = target < n ? answer.tokens[target] : -1;
    }
  }
  answer.kv.Release();
  ++done_;
}

absl::StatusOr<DistillSet> Distiller::Run(const std::function<void(const SelfDistillProgress&)>& on_progress) {
  if (options_.num_heads < 1 || options_.max_new_tokens < 1 || options_.concurrency < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "self-distillation needs num_heads, max_new_tokens and concurrency >= 1 (got %d, %d, %d)",
        options_.num_heads, options_.max_new_tokens, options_.concurrency));
  }
  RETURN_IF_ERROR(options_.sampling.Validate());
  const auto start = std::chrono::steady_clock::now();
  const int total = static_cast<int>(prompts_.size());
  int next = 0;
  while (next < total || !active_.empty()) {
    while (next < total && static_cast<int>(active_.size()) < options_.concurrency) {
      if (absl::Status s = Admit(next); !s.ok()) {
        // Out of KV blocks with answers running: wait for them to finish.
        if (s.code() == absl::StatusCode::kResourceExhausted && !active_.empty()) break;
        return s;
      }
      ++next;
    }
    if (!active_.empty()) {
      RETURN_IF_ERROR(DecodeStep());
    }
    if (on_progress) {
      on_progress({.prompts_done = done_, .prompts_total = total, .tokens = tokens_,
                   .elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
    }
  }
  DistillSet all;
  all.dim = config_.dim;
  all.num_heads = options_.num_heads;
  for (const DistillSet& set : per_prompt_) {
    all.hidden.insert(all.hidden.end(), set.hidden.begin(), set.hidden.end());
    all.targets.insert(all.targets.end(), set.targets.begin(), set.targets.end());
  }
  return all;
}

std::string PromptText(const nlohmann::json& item) {
  if (item.is_string()) return item.get<std::string>();
  if (!item.is_object()) return "";
  if (auto it = item.find("conversations"); it != item.end() && it->is_array()) {
    for (const nlohmann::json& turn : *it) {
      if (turn.is_object() && turn.value("from", "") == "human" && turn.contains("value") &&
          turn["value"].is_string()) {
        return turn["value"].get<std::string>();
      }
    }
    return "";
  }
  if (auto it = item.find("instruction"); it != item.end() && it->is_string()) return it->get<std::string>();
  if (auto it = item.find("prompt"); it != item.end() && it->is_string()) return it->get<std::string>();
  return "";
}

}  // namespace

absl::StatusOr<DistillSet> SelfDistill(Engine& engine, const std::vector<std::vector<int32_t>>& prompts,
                                       const SelfDistillOptions& options,
                                       const std::function<void(const SelfDistillProgress&)>& on_progress) {
  Distiller distiller(engine, prompts, options);
  return distiller.Run(on_progress);
}

absl::StatusOr<std::vector<std::string>> LoadSeedPrompts(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read seed prompts '", path, "'"));
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not valid JSON"));
  if (!doc.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' must hold a JSON list of prompts"));
  }
  std::vector<std::string> prompts;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < doc.size(); ++i) {
    if (!doc[i].is_string() && !doc[i].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("'%s' item %d is neither a string nor an object", path, i));
    }
    std::string text = PromptText(doc[i]);
    if (text.empty() || !seen.insert(text).second) continue;
    prompts.push_back(std::move(text));
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat("'", path, "' holds no prompts"));
  return prompts;
}

}  // namespace medusa
