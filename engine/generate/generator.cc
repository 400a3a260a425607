#include "engine/generate/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"
#include "engine/generate/text_stream.h"

namespace medusa {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs tokens [begin, end) of `ids` at positions begin.. of `seq`, causally,
// returning the logits of the last one.
absl::Status ForwardCausal(Engine& engine, kv::SequenceKv& seq, absl::Span<const int32_t> ids,
                           int begin, kernels::ForwardBatch& batch, kernels::ForwardResult& result) {
  const int count = static_cast<int>(ids.size());
  if (absl::Status s = seq.Reserve(begin + count); !s.ok()) return s;
  batch.Clear();
  batch.block_tables.push_back(seq.block_table());
  for (int i = 0; i < count; ++i) {
    const int32_t pos = begin + i;
    batch.tokens.push_back({.token = ids[i], .position = pos, .seq = 0, .kv_index = pos,
                            .attend_prefix = pos + 1});
  }
  batch.output_rows.push_back(count - 1);
  batch.want_logits = true;
  if (absl::Status s = engine.backend().Forward(batch, &result); !s.ok()) return s;
  seq.SetLength(begin + count);
  return absl::OkStatus();
}

}  // namespace

std::vector<int32_t> StopTokenIds(const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = tokenizer.stop_ids();
  if (tokenizer.bos_id() >= 0 && std::find(ids.begin(), ids.end(), tokenizer.bos_id()) == ids.end()) {
    ids.push_back(tokenizer.bos_id());
  }
  return ids;
}

absl::Status ValidateRequest(const Engine& engine, const GenerationRequest& request) {
  const ModelConfig& config = engine.config();
  if (request.prompt_ids.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (int32_t id : request.prompt_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token id %d is outside the vocabulary [0, %d)", id, config.vocab_size));
    }
  }
  if (static_cast<int>(request.prompt_ids.size()) >= config.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "prompt has %d tokens; the model's context is %d, which leaves no room to generate",
        request.prompt_ids.size(), config.max_seq_len));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_tokens must be >= 1, got %d", request.max_tokens));
  }
  return request.sampling.Validate();
}

absl::StatusOr<GenerationResult> GeneratePlain(Engine& engine, const GenerationRequest& request,
                                               const StreamCallback& on_text) {
  if (absl::Status s = ValidateRequest(engine, request); !s.ok()) return s;
  const ModelConfig& config = engine.config();
  const Tokenizer& tokenizer = engine.tokenizer();
  const int prompt_len = static_cast<int>(request.prompt_ids.size());
  const int max_tokens = std::min(request.max_tokens, config.max_seq_len - prompt_len);

  GenerationResult result;
  result.prompt_tokens = prompt_len;
  result.token_ids.reserve(max_tokens);
  std::vector<int32_t> stop_ids;
  if (!request.ignore_eos) stop_ids = StopTokenIds(tokenizer);
  TextStream stream(tokenizer, request.stop_strings, stop_ids, request.prompt_ids.back());
  Sampler sampler(request.sampling);
  kv::SequenceKv seq = engine.NewSequence();  // blocks return when this goes out of scope
  kernels::ForwardBatch batch;
  kernels::ForwardResult forward;
  size_t streamed_ids = 0;
  auto emit = [&](std::string text) {
    if (on_text && (!text.empty() || streamed_ids < result.token_ids.size())) {
      on_text(absl::MakeConstSpan(result.token_ids).subspan(streamed_ids), text);
      streamed_ids = result.token_ids.size();
    }
    result.text += text;
  };

  // Prefill, chunk by chunk; the last chunk's logits give the first token.
  const auto prefill_start = Clock::now();
  const absl::Span<const int32_t> prompt(request.prompt_ids);
  for (int begin = 0; begin < prompt_len; begin += engine.options().prefill_chunk) {
    int count = std::min(engine.options().prefill_chunk, prompt_len - begin);
    if (absl::Status s = ForwardCausal(engine, seq, prompt.subspan(begin, count), begin, batch, forward);
        !s.ok()) {
      return s;
    }
  }
  result.prefill_seconds = SecondsSince(prefill_start);

  const auto decode_start = Clock::now();
  result.finish_reason = "length";
  for (;;) {
    const int32_t next = sampler.Sample(absl::MakeConstSpan(forward.logits).first(config.vocab_size));
    result.token_ids.push_back(next);
    ++result.steps;
    const bool stop = stream.Push(next);
    emit(stream.TakeReady());
    if (stop) {
      result.finish_reason = "stop";
      break;
    }
    if (result.new_tokens() >= max_tokens) break;
    const int32_t one[1] = {next};
    if (absl::Status s = ForwardCausal(engine, seq, one, seq.length(), batch, forward); !s.ok()) {
      return s;
    }
  }
  emit(stream.TakeRest());
  result.decode_seconds = SecondsSince(decode_start);
  return result;
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const Tokenizer& tokenizer,
                                                absl::Span<const ChatMessage> messages) {
  absl::StatusOr<std::string> text = ApplyChatTemplate(tokenizer, messages, true);
  if (!text.ok()) return text.status();
  // The template writes BOS itself where the model wants one.
  return tokenizer.Encode(*text, /*add_bos=*/false, /*parse_special=*/true);
}

absl::StatusOr<std::vector<int32_t>> EncodePrompt(const Tokenizer& tokenizer, std::string_view text,
                                                  bool chat) {
  if (chat) {
    ChatMessage message{"user", std::string(text)};
    return EncodeChat(tokenizer, absl::MakeConstSpan(&message, 1));
  }
  return tokenizer.Encode(text, tokenizer.add_bos_default(), /*parse_special=*/true);
}

}  // namespace medusa
