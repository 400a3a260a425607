#include "engine/generate/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_format.h"
#include "engine/generate/text_stream.h"
#include "engine/medusa/acceptance.h"
#include "engine/medusa/candidates.h"

namespace medusa {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One request's decoding: prefill, then Medusa steps (a root-only tree when plain).
class Decoder {
 public:
  Decoder(Engine& engine, const GenerationRequest& request, const StreamCallback& on_text,
          const GenerateHooks& hooks)
      : engine_(engine),
        config_(engine.config()),
        request_(request),
        on_text_(on_text),
        hooks_(hooks),
        medusa_(request.use_medusa && engine.medusa_tree() != nullptr &&
                engine.medusa_tree()->num_nodes() > 1),
        stop_ids_(request.ignore_eos ? std::vector<int32_t>{} : StopTokenIds(engine.tokenizer())),
        stream_(engine.tokenizer(), request.stop_strings, stop_ids_, request.prompt_ids.back()),
        sampler_(request.sampling),
        seq_(engine.NewSequence()) {}

  absl::StatusOr<GenerationResult> Run();

 private:
  // Per tree: candidate tokens and acceptance, with buffers reused every step.
  struct TreeState {
    const MedusaTree* tree;
    CandidateBuilder candidates;
    Acceptor acceptor;
  };
  static absl::StatusOr<std::unique_ptr<TreeState>> MakeTreeState(const MedusaTree& tree, int vocab,
                                                                   const TypicalAcceptanceOptions& typical);

  absl::Status Prefill();
  // One verification step; returns the accepted path (valid until the next step).
  absl::StatusOr<const AcceptedPath*> Step();
  absl::Status Verify(TreeState& state, int32_t root);
  absl::Status Compact(const AcceptedPath& path, int context);
  // Records a generated token; true when generation must end.
  bool Emit(int32_t token);
  void Flush(std::string text);

  Engine& engine_;
  const ModelConfig& config_;
  const GenerationRequest& request_;
  const StreamCallback& on_text_;
  const GenerateHooks& hooks_;
  const bool medusa_;
  const std::vector<int32_t> stop_ids_;
  TextStream stream_;
  Sampler sampler_;
  kv::SequenceKv seq_;  // blocks return when the decoder goes away, however it ends
  MedusaTree root_only_;
  std::unique_ptr<TreeState> full_, plain_;
  kernels::ForwardBatch batch_;
  kernels::ForwardResult forward_;
  std::vector<float> hidden_;       // final-normed hidden state of the last kept node
  std::vector<float> head_logits_;  // [heads, vocab]
  std::vector<kernels::KvSlotCopy> copies_;
  std::vector<int32_t> tokens_;     // prompt and generated so far
  int32_t root_ = -1;               // the token chosen last, whose K/V the next step writes
  int max_tokens_ = 0;
  size_t streamed_ids_ = 0;
  GenerationResult result_;
};

absl::StatusOr<std::unique_ptr<Decoder::TreeState>> Decoder::MakeTreeState(
    const MedusaTree& tree, int vocab, const TypicalAcceptanceOptions& typical) {
  absl::StatusOr<CandidateBuilder> candidates = CandidateBuilder::Create(tree, vocab);
  if (!candidates.ok()) return candidates.status();
  return std::unique_ptr<TreeState>(new TreeState{&tree, *std::move(candidates), Acceptor(tree, vocab, typical)});
}

absl::Status Decoder::Prefill() {
  const absl::Span<const int32_t> prompt(request_.prompt_ids);
  const int length = static_cast<int>(prompt.size());
  if (absl::Status s = seq_.Reserve(length); !s.ok()) return s;
  for (int begin = 0; begin < length; begin += engine_.options().prefill_chunk) {
    const int count = std::min(engine_.options().prefill_chunk, length - begin);
    batch_.Clear();
    batch_.block_tables.push_back(seq_.block_table());
    for (int i = begin; i < begin + count; ++i) {
      batch_.tokens.push_back({.token = prompt[i], .position = i, .seq = 0, .kv_index = i, .attend_prefix = i + 1});
    }
    const bool last = begin + count == length;
    if (last) batch_.output_rows.push_back(count - 1);
    batch_.want_logits = last;
    batch_.want_hidden = last && medusa_;
    if (absl::Status s = engine_.backend().Forward(batch_, &forward_); !s.ok()) return s;
  }
  seq_.SetLength(length);
  hidden_ = forward_.hidden;
  return absl::OkStatus();
}

absl::Status Decoder::Verify(TreeState& state, int32_t root) {
  const MedusaTree& tree = *state.tree;
  if (tree.num_nodes() > 1) {
    if (hooks_.draft_override) {
      hooks_.draft_override(tokens_, state.candidates);
      state.candidates.AssignTokens(root);
    } else {
      if (absl::Status s = engine_.backend().MedusaHeadLogits(hidden_, 1, tree.num_heads_used(), &head_logits_);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = state.candidates.Build(root, head_logits_); !s.ok()) return s;
    }
  } else {
    state.candidates.AssignTokens(root);
  }
  // Node n sits in KV slot context + n at position context + depth, and attends to
  // the context and to its ancestors (root and itself included), by depth.
  const int context = seq_.length();
  batch_.Clear();
  batch_.block_tables.push_back(seq_.block_table());
  const absl::Span<const int32_t> tokens = state.candidates.node_tokens();
  for (int n = 0; n < tree.num_nodes(); ++n) {
    const absl::Span<const int> ancestors = tree.ancestors(n);
    batch_.tokens.push_back({.token = tokens[n], .position = context + tree.depth(n), .seq = 0,
                             .kv_index = context + n, .attend_prefix = context,
                             .extra_begin = static_cast<int32_t>(batch_.extra_indices.size()),
                             .extra_count = static_cast<int32_t>(ancestors.size())});
    for (int a : ancestors) batch_.extra_indices.push_back(context + a);
    batch_.output_rows.push_back(n);
  }
  batch_.want_logits = true;
  batch_.want_hidden = medusa_;
  return engine_.backend().Forward(batch_, &forward_);
}

absl::Status Decoder::Compact(const AcceptedPath& path, int context) {
  // Kept node i (at slot context + nodes[i]) moves to slot context + i; nodes[i] >= i.
  copies_.clear();
  for (int i = 1; i < static_cast<int>(path.nodes.size()); ++i) {
    const int from = context + path.nodes[i], to = context + i;
    if (from == to) continue;
    copies_.push_back({seq_.BlockOf(from), seq_.OffsetOf(from), seq_.BlockOf(to), seq_.OffsetOf(to)});
  }
  if (!copies_.empty()) {
    if (absl::Status s = engine_.backend().CopyKvSlots(copies_); !s.ok()) return s;
  }
  const int kept = context + static_cast<int>(path.nodes.size());
  seq_.SetLength(kept);
  seq_.Truncate(kept);  // the rejected nodes' slots and blocks go back
  return absl::OkStatus();
}

absl::StatusOr<const AcceptedPath*> Decoder::Step() {
  const int context = seq_.length();
  const int remaining = max_tokens_ - result_.new_tokens();
  // A tree when it can pay: more than one token still wanted, and its deepest node
  // inside the model's context. Without KV room for the tree, a plain step.
  TreeState* state = plain_.get();
  if (medusa_ && remaining > 1 && context + full_->tree->max_depth() < config_.max_seq_len &&
      seq_.Reserve(context + full_->tree->num_nodes()).ok()) {
    state = full_.get();
  }
  if (absl::Status s = seq_.Reserve(context + state->tree->num_nodes()); !s.ok()) return s;
  if (absl::Status s = Verify(*state, root_); !s.ok()) return s;
  absl::StatusOr<const AcceptedPath*> path =
      state->acceptor.Accept(state->candidates.node_tokens(), forward_.logits, sampler_);
  if (!path.ok()) return path.status();
  if (absl::Status s = Compact(**path, context); !s.ok()) return s;
  if (medusa_) {
    const size_t dim = config_.dim;
    hidden_.assign(forward_.hidden.begin() + (*path)->last_node() * dim,
                   forward_.hidden.begin() + ((*path)->last_node() + 1) * dim);
  }
  return path;
}

bool Decoder::Emit(int32_t token) {
  result_.token_ids.push_back(token);
  tokens_.push_back(token);
  root_ = token;
  if (stream_.Push(token)) {
    result_.finish_reason = "stop";
    return true;
  }
  if (result_.new_tokens() >= max_tokens_) {
    result_.finish_reason = "length";
    return true;
  }
  return false;
}

void Decoder::Flush(std::string text) {
  if (on_text_ && (!text.empty() || streamed_ids_ < result_.token_ids.size())) {
    on_text_(absl::MakeConstSpan(result_.token_ids).subspan(streamed_ids_), text);
    streamed_ids_ = result_.token_ids.size();
  }
  result_.text += text;
}

absl::StatusOr<GenerationResult> Decoder::Run() {
  const int prompt_len = static_cast<int>(request_.prompt_ids.size());
  max_tokens_ = std::min(request_.max_tokens, config_.max_seq_len - prompt_len);
  result_.prompt_tokens = prompt_len;
  result_.token_ids.reserve(max_tokens_);
  tokens_ = request_.prompt_ids;
  absl::StatusOr<std::unique_ptr<TreeState>> plain = MakeTreeState(root_only_, config_.vocab_size, request_.typical);
  if (!plain.ok()) return plain.status();
  plain_ = *std::move(plain);
  if (medusa_) {
    absl::StatusOr<std::unique_ptr<TreeState>> full =
        MakeTreeState(*engine_.medusa_tree(), config_.vocab_size, request_.typical);
    if (!full.ok()) return full.status();
    full_ = *std::move(full);
    result_.accepted_per_position.assign(full_->tree->max_depth(), 0);
    result_.accepted_length_counts.assign(full_->tree->max_depth() + 1, 0);
  }

  const auto prefill_start = Clock::now();
  if (absl::Status s = Prefill(); !s.ok()) return s;
  result_.prefill_seconds = SecondsSince(prefill_start);

  const auto decode_start = Clock::now();
  result_.steps = 1;  // the prefill's last pass yields the first token
  bool done = Emit(sampler_.Sample(absl::MakeConstSpan(forward_.logits).first(config_.vocab_size)));
  Flush(stream_.TakeReady());
  result_.step_seconds.reserve(max_tokens_);
  while (!done) {
    const auto step_start = Clock::now();
    absl::StatusOr<const AcceptedPath*> path = Step();
    if (!path.ok()) return path.status();
    result_.step_seconds.push_back(SecondsSince(step_start));
    ++result_.steps;
    if (hooks_.after_step) hooks_.after_step(seq_);
    const int accepted = (*path)->accepted();
    result_.accepted_tokens += accepted;
    if (medusa_) {
      ++result_.accepted_length_counts[accepted];
      for (int k = 0; k < accepted; ++k) ++result_.accepted_per_position[k];
    }
    for (int32_t token : (*path)->tokens) {
      if ((done = Emit(token))) break;  // a stop or the length limit drops the rest
    }
    Flush(stream_.TakeReady());
  }
  Flush(stream_.TakeRest());
  result_.decode_seconds = SecondsSince(decode_start);
  return std::move(result_);
}

}  // namespace

double GenerationResult::step_ms_quantile(double q) const {
  if (step_seconds.empty()) return 0.0;
  std::vector<double> sorted = step_seconds;
  std::sort(sorted.begin(), sorted.end());
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(q * (sorted.size() - 1) + 0.5));
  return 1e3 * sorted[index];
}

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
  const TypicalAcceptanceOptions& typical = request.typical;
  if (!(typical.epsilon >= 0 && typical.epsilon <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("typical acceptance epsilon must be in [0, 1], got %g", typical.epsilon));
  }
  if (!(typical.delta >= 0 && typical.delta <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("typical acceptance delta must be in [0, 1], got %g", typical.delta));
  }
  return request.sampling.Validate();
}

absl::StatusOr<GenerationResult> Generate(Engine& engine, const GenerationRequest& request,
                                          const StreamCallback& on_text, const GenerateHooks& hooks) {
  if (absl::Status s = ValidateRequest(engine, request); !s.ok()) return s;
  Decoder decoder(engine, request, on_text, hooks);
  return decoder.Run();
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
