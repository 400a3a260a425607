#include "engine/generate/sequence_decoder.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/generate/batch_planner.h"
#include "kernels/base/status_macros.h"

namespace medusa {
namespace {

double SecondsSince(SequenceDecoder::Clock::time_point start) {
  return std::chrono::duration<double>(SequenceDecoder::Clock::now() - start).count();
}

}  // namespace

SequenceDecoder::SequenceDecoder(Engine& engine, GenerationRequest request, Options options)
    : engine_(engine),
      config_(engine.config()),
      request_(std::move(request)),
      options_(std::move(options)),
      stop_ids_(request_.ignore_eos ? std::vector<int32_t>{} : StopTokenIds(engine.tokenizer())),
      prompt_len_(static_cast<int>(request_.prompt_ids.size())),
      max_tokens_(std::min(request_.max_tokens, config_.max_seq_len - prompt_len_)),
      stream_(engine.tokenizer(), request_.stop_strings, stop_ids_, request_.prompt_ids.back()),
      sampler_(request_.sampling),
      seq_(engine.NewSequence()) {}

absl::StatusOr<std::unique_ptr<SequenceDecoder>> SequenceDecoder::Create(Engine& engine, GenerationRequest request,
                                                                         Options options) {
  if (request.prompt_ids.empty()) return absl::InvalidArgumentError("prompt is empty");
  std::unique_ptr<SequenceDecoder> d(new SequenceDecoder(engine, std::move(request), std::move(options)));
  ASSIGN_OR_RETURN(CandidateBuilder candidates, CandidateBuilder::Create(d->root_only_, d->config_.vocab_size));
  d->plain_.reset(new TreeState{&d->root_only_, std::move(candidates),
                                Acceptor(d->root_only_, d->config_.vocab_size, d->request_.acceptance)});
  d->planned_ = d->plain_.get();
  GenerationResult& r = d->result_;
  r.prompt_tokens = d->prompt_len_;
  r.token_ids.reserve(d->max_tokens_);
  r.step_seconds.reserve(d->max_tokens_);
  if (d->options_.use_medusa) {
    r.accepted_per_position.assign(d->options_.stats_depth, 0);
    r.accepted_length_counts.assign(d->options_.stats_depth + 1, 0);
  }
  d->tokens_.reserve(d->prompt_len_ + d->max_tokens_);
  d->tokens_ = d->request_.prompt_ids;
  const EngineOptions& engine_options = engine.options();
  if (d->options_.use_medusa && engine_options.lookup_tokens > 0) {
    d->lookup_.emplace(engine_options.lookup_min_ngram, engine_options.lookup_max_ngram);
  }
  return d;
}

bool SequenceDecoder::wants_hidden() const {
  return options_.use_medusa || (options_.hooks != nullptr && options_.hooks->on_token);
}

void SequenceDecoder::Fail(absl::Status status) {
  if (!status_.ok()) return;
  status_ = std::move(status);
  seq_.Release();
}

absl::StatusOr<SequenceDecoder::TreeState*> SequenceDecoder::StateFor(const MedusaTree& tree) {
  if (tree.num_nodes() <= 1) return plain_.get();
  for (const auto& state : trees_) {
    if (state->tree == &tree) return state.get();
  }
  ASSIGN_OR_RETURN(CandidateBuilder candidates, CandidateBuilder::Create(tree, config_.vocab_size));
  trees_.push_back(std::unique_ptr<TreeState>(
      new TreeState{&tree, std::move(candidates), Acceptor(tree, config_.vocab_size, request_.acceptance)}));
  return trees_.back().get();
}

absl::Status SequenceDecoder::ReservePrompt() {
  prefill_start_ = Clock::now();
  return seq_.Reserve(prompt_len_);
}

void SequenceDecoder::AppendPrefill(kernels::ForwardBatch& batch, int max_count) {
  const int begin = prefilled_;
  const int count = std::min(max_count, prompt_len_ - begin);
  prefilled_ += count;
  last_prefill_count_ = count;
  first_row_ = AppendCausal(batch, AddSequence(batch, seq_.block_table()),
                            absl::MakeConstSpan(request_.prompt_ids).subspan(begin, count), begin,
                            /*want_last_row=*/prefilled_ == prompt_len_);
}

absl::Status SequenceDecoder::ReserveRoot() {
  context_ = seq_.length();
  planned_ = plain_.get();
  return seq_.Reserve(context_ + 1);
}

absl::Status SequenceDecoder::PlanTree(const MedusaTree* tree) {
  planned_ = plain_.get();
  lookup_drafted_ = false;
  // A tree when it can pay: more than one token still wanted, and its deepest node
  // inside the model's context. Without KV room for the tree, a plain step.
  const int remaining = max_tokens_ - result_.new_tokens();
  if (!options_.use_medusa || tree == nullptr || tree->num_nodes() <= 1 || remaining <= 1 ||
      context_ + tree->max_depth() >= config_.max_seq_len || !seq_.Reserve(context_ + tree->num_nodes()).ok()) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(planned_, StateFor(*tree));
  return absl::OkStatus();
}

absl::Status SequenceDecoder::PlanLookupDraft(int max_tokens) {
  if (!lookup_ || planned_->tree->num_nodes() <= 1 || (options_.hooks && options_.hooks->draft_override)) {
    return absl::OkStatus();
  }
  // Each kept draft token is one more token out; the deepest node must stay inside the context.
  const int remaining = max_tokens_ - result_.new_tokens();
  const int most = std::min({max_tokens, remaining - 1, depth_room(), MedusaTree::kMaxDepth});
  const std::vector<int32_t> chain = lookup_->Propose(tokens_, most);
  if (chain.empty() || !seq_.Reserve(context_ + 1 + static_cast<int>(chain.size())).ok()) return absl::OkStatus();
  auto tree = std::make_unique<MedusaTree>(MedusaTree::Chain(static_cast<int>(chain.size())));
  std::vector<int32_t> node_tokens = {root_};
  node_tokens.insert(node_tokens.end(), chain.begin(), chain.end());
  ASSIGN_OR_RETURN(CandidateBuilder candidates, CandidateBuilder::Create(*tree, config_.vocab_size));
  RETURN_IF_ERROR(candidates.AssignNodeTokens(node_tokens));
  PlanStepTree(std::move(tree), std::move(candidates));
  lookup_drafted_ = true;
  return absl::OkStatus();
}

bool SequenceDecoder::needs_head_topk() const {
  return !lookup_drafted_ && planned_->tree->num_nodes() > 1 && !(options_.hooks && options_.hooks->draft_override);
}

absl::Status SequenceDecoder::BuildCandidates(absl::Span<const int32_t> head_topk) {
  if (lookup_drafted_) return absl::OkStatus();  // the chain's tokens are set
  CandidateBuilder& candidates = planned_->candidates;
  const MedusaTree& tree = *planned_->tree;
  if (tree.num_nodes() > 1 && options_.hooks && options_.hooks->draft_override) {
    options_.hooks->draft_override(tokens_, candidates);
  } else if (tree.num_nodes() > 1) {
    for (int h = 0; h < tree.num_heads_used(); ++h) {
      const absl::Span<int32_t> ids = candidates.mutable_head_topk(h);
      if (head_topk.size() < ids.size()) {
        return absl::InternalError("the Medusa heads returned fewer top tokens than the tree uses");
      }
      std::copy_n(head_topk.begin(), ids.size(), ids.begin());
      head_topk.remove_prefix(ids.size());
    }
  }
  candidates.AssignTokens(root_);
  return absl::OkStatus();
}

absl::Status SequenceDecoder::BuildDynamicCandidates(const HeadProposals& proposals, int budget) {
  const MedusaTree& envelope = *planned_->tree;
  const std::vector<std::vector<int>> paths = ChooseDynamicPaths(envelope, proposals, budget);
  if (paths.empty()) {
    planned_ = plain_.get();
    return BuildCandidates({});
  }
  ASSIGN_OR_RETURN(MedusaTree chosen, MedusaTree::FromPaths(paths, envelope.num_heads_used()));
  auto tree = std::make_unique<MedusaTree>(std::move(chosen));
  ASSIGN_OR_RETURN(CandidateBuilder candidates, CandidateBuilder::Create(*tree, config_.vocab_size));
  for (int h = 0; h < tree->num_heads_used(); ++h) {
    const absl::Span<int32_t> ids = candidates.mutable_head_topk(h);
    if (h >= static_cast<int>(proposals.ids.size()) || proposals.ids[h].size() < ids.size()) {
      return absl::InternalError("the dynamic tree asks a head for more tokens than it proposed");
    }
    std::copy_n(proposals.ids[h].begin(), ids.size(), ids.begin());
  }
  candidates.AssignTokens(root_);
  PlanStepTree(std::move(tree), std::move(candidates));
  return absl::OkStatus();
}

absl::Status SequenceDecoder::BuildGrownCandidates(const std::vector<std::vector<int>>& paths,
                                                   absl::Span<const int32_t> tokens) {
  if (paths.size() != tokens.size()) {
    return absl::InternalError(absl::StrCat("a grown tree of ", paths.size(), " paths and ", tokens.size(), " tokens"));
  }
  if (paths.empty()) {
    planned_ = plain_.get();
    return BuildCandidates({});
  }
  ASSIGN_OR_RETURN(MedusaTree chosen, MedusaTree::FromPaths(paths, /*num_heads=*/0));
  if (chosen.num_nodes() > planned_->tree->num_nodes() || chosen.max_depth() > depth_room()) {
    return absl::InternalError(absl::StrCat("a grown tree of ", chosen.num_nodes(), " nodes and depth ",
                                            chosen.max_depth(), " where ", planned_->tree->num_nodes(),
                                            " nodes and depth ", depth_room(), " were planned"));
  }
  auto tree = std::make_unique<MedusaTree>(std::move(chosen));
  // The tree orders its nodes by (depth, path): find each one's token by its path.
  std::map<std::vector<int>, int32_t> token_of;
  for (size_t i = 0; i < paths.size(); ++i) token_of[paths[i]] = tokens[i];
  std::vector<int32_t> node_tokens(tree->num_nodes(), root_);
  for (int n = 1; n < tree->num_nodes(); ++n) {
    const absl::Span<const int> path = tree->path(n);
    node_tokens[n] = token_of.at(std::vector<int>(path.begin(), path.end()));
  }
  ASSIGN_OR_RETURN(CandidateBuilder candidates, CandidateBuilder::Create(*tree, config_.vocab_size));
  RETURN_IF_ERROR(candidates.AssignNodeTokens(node_tokens));
  PlanStepTree(std::move(tree), std::move(candidates));
  return absl::OkStatus();
}

void SequenceDecoder::PlanStepTree(std::unique_ptr<MedusaTree> tree, CandidateBuilder candidates) {
  auto state = std::unique_ptr<TreeState>(
      new TreeState{tree.get(), std::move(candidates), Acceptor(*tree, config_.vocab_size, request_.acceptance)});
  dynamic_ = std::move(state);  // the last step's state goes before its tree
  dynamic_tree_ = std::move(tree);
  planned_ = dynamic_.get();
}

void SequenceDecoder::AppendStep(kernels::ForwardBatch& batch) {
  const MedusaTree& tree = *planned_->tree;
  const absl::Span<const int32_t> node_tokens = planned_->candidates.node_tokens();
  first_row_ = AppendTree(batch, AddSequence(batch, seq_.block_table()), tree, node_tokens, context_);
  if (!samples_typically()) return;
  // Typical acceptance reads each parent row's softmax summary and each node's token's logit
  // in its parent's row: a few numbers per node instead of the rows.
  const float temperature = request_.sampling.temperature;
  stats_begin_ = batch.row_stats.size();
  queries_begin_ = batch.logit_queries.size();
  for (int n = 0; n < tree.num_nodes(); ++n) {
    if (!tree.children(n).empty()) batch.row_stats.push_back({first_row_ + n, temperature});  // parents only
  }
  for (int n = 1; n < tree.num_nodes(); ++n) {
    batch.logit_queries.push_back({first_row_ + tree.parent(n), node_tokens[n]});
  }
}

absl::StatusOr<absl::Span<const float>> SequenceDecoder::ReadRow(int output_row) {
  RETURN_IF_ERROR(engine_.backend().ReadOutputLogits(output_row, &row_));
  return absl::MakeConstSpan(row_);
}

absl::Status SequenceDecoder::AfterForward(const kernels::ForwardResult& forward, Clock::time_point step_start) {
  last_accepted_ = last_emitted_ = 0;
  if (ended()) return absl::FailedPreconditionError("AfterForward on a sequence that has ended");
  if (phase_ == Phase::kPrefill) {
    if (first_row_ < 0) return absl::OkStatus();  // a chunk before the last: nothing to read yet
    return FinishPrefill(forward);
  }
  return FinishStep(forward, step_start);
}

bool SequenceDecoder::HasRows(const kernels::ForwardResult& forward, size_t rows) const {
  const bool outputs =
      wants_logits() ? forward.logits.size() >= rows * config_.vocab_size : forward.argmax.size() >= rows;
  return outputs && (!wants_hidden() || forward.hidden.size() >= rows * static_cast<size_t>(config_.dim));
}

void SequenceDecoder::KeepHidden(const kernels::ForwardResult& forward, int row) {
  if (!options_.use_medusa) return;
  const size_t dim = config_.dim;
  hidden_.assign(forward.hidden.begin() + row * dim, forward.hidden.begin() + (row + 1) * dim);
}

absl::Status SequenceDecoder::FinishPrefill(const kernels::ForwardResult& forward) {
  const size_t vocab = config_.vocab_size;
  if (!HasRows(forward, first_row_ + 1))
    return absl::InternalError("the prefill pass returned fewer output rows than asked");
  seq_.SetLength(prompt_len_);
  KeepHidden(forward, first_row_);
  result_.prefill_seconds = SecondsSince(prefill_start_);
  decode_start_ = Clock::now();
  phase_ = Phase::kDecode;
  result_.steps = 1;  // the prefill's last pass yields the first token
  int32_t first = forward.argmax[first_row_];
  if (wants_logits()) {
    first = sampler_.Sample(absl::MakeConstSpan(forward.logits).subspan(first_row_ * vocab, vocab));
  } else if (samples_typically()) {
    ASSIGN_OR_RETURN(const absl::Span<const float> row, ReadRow(first_row_));
    first = sampler_.Sample(row);
  }
  const bool stop = Emit(first, forward, first_row_);
  last_emitted_ = 1;
  Flush(stream_.TakeReady());
  if (stop) Finish();
  return absl::OkStatus();
}

absl::Status SequenceDecoder::Compact(const AcceptedPath& path) {
  // Kept node i (at slot context + nodes[i]) moves to slot context + i; nodes[i] >= i.
  copies_.clear();
  for (int i = 1; i < static_cast<int>(path.nodes.size()); ++i) {
    const int from = context_ + path.nodes[i], to = context_ + i;
    if (from == to) continue;
    copies_.push_back({seq_.BlockOf(from), seq_.OffsetOf(from), seq_.BlockOf(to), seq_.OffsetOf(to)});
  }
  if (!copies_.empty()) RETURN_IF_ERROR(engine_.backend().CopyKvSlots(copies_));
  const int kept = context_ + static_cast<int>(path.nodes.size());
  seq_.SetLength(kept);
  seq_.Truncate(kept);  // the rejected nodes' slots and blocks go back
  return absl::OkStatus();
}

void SequenceDecoder::CountAccepted(int accepted) {
  result_.accepted_tokens += accepted;
  if (!options_.use_medusa) return;
  if (static_cast<int>(result_.accepted_per_position.size()) < accepted) {
    result_.accepted_per_position.resize(accepted, 0);
    result_.accepted_length_counts.resize(accepted + 1, 0);
  }
  ++result_.accepted_length_counts[accepted];
  for (int k = 0; k < accepted; ++k) ++result_.accepted_per_position[k];
}

absl::StatusOr<const AcceptedPath*> SequenceDecoder::Accept(const kernels::ForwardResult& forward) {
  const size_t vocab = config_.vocab_size, nodes = planned_->tree->num_nodes();
  Acceptor& acceptor = planned_->acceptor;
  const absl::Span<const int32_t> node_tokens = planned_->candidates.node_tokens();
  if (wants_logits()) {
    return acceptor.Accept(node_tokens, absl::MakeConstSpan(forward.logits).subspan(first_row_ * vocab, nodes * vocab),
                           sampler_);
  }
  if (!samples_typically()) {
    return acceptor.AcceptGreedy(node_tokens, absl::MakeConstSpan(forward.argmax).subspan(first_row_, nodes));
  }
  const MedusaTree& tree = *planned_->tree;
  if (forward.queried_logits.size() < queries_begin_ + nodes - 1) {
    return absl::InternalError("the verification pass returned fewer logits than asked");
  }
  node_stats_.assign(nodes, kernels::SoftmaxStats{});
  for (size_t n = 0, q = stats_begin_; n < nodes; ++n) {
    if (tree.children(n).empty()) continue;  // a leaf's row is no one's parent
    if (q >= forward.row_stats.size())
      return absl::InternalError("the verification pass returned fewer row statistics than asked");
    node_stats_[n] = forward.row_stats[q++];
  }
  child_logits_.assign(nodes, 0.0f);
  std::copy_n(forward.queried_logits.begin() + queries_begin_, nodes - 1, child_logits_.begin() + 1);
  return acceptor.AcceptTypical(
      node_tokens, node_stats_, child_logits_, [&](int node) { return ReadRow(first_row_ + node); }, sampler_);
}

absl::Status SequenceDecoder::FinishStep(const kernels::ForwardResult& forward, Clock::time_point step_start) {
  const size_t nodes = planned_->tree->num_nodes();
  if (first_row_ < 0 || !HasRows(forward, first_row_ + nodes)) {
    return absl::InternalError("the verification pass returned fewer output rows than the tree has nodes");
  }
  ASSIGN_OR_RETURN(const AcceptedPath* path, Accept(forward));
  RETURN_IF_ERROR(Compact(*path));
  KeepHidden(forward, first_row_ + path->last_node());
  result_.step_seconds.push_back(SecondsSince(step_start));
  ++result_.steps;
  if (options_.hooks && options_.hooks->after_step) options_.hooks->after_step(seq_);
  last_accepted_ = path->accepted();
  CountAccepted(last_accepted_);
  if (lookup_drafted_) {
    ++result_.lookup_steps;
    result_.lookup_accepted_tokens += last_accepted_;
  }
  bool stop = false;
  // Token i was chosen by the logits of path node i (the bonus token by the last node's).
  for (size_t i = 0; i < path->tokens.size() && !stop; ++i) {
    ++last_emitted_;
    stop = Emit(path->tokens[i], forward, first_row_ + path->nodes[i]);  // a stop drops the rest
  }
  Flush(stream_.TakeReady());
  if (stop) Finish();
  return absl::OkStatus();
}

bool SequenceDecoder::Emit(int32_t token, const kernels::ForwardResult& forward, int row) {
  if (options_.hooks && options_.hooks->on_token) {
    const size_t dim = config_.dim;
    options_.hooks->on_token(absl::MakeConstSpan(forward.hidden).subspan(row * dim, dim), token);
  }
  result_.token_ids.push_back(token);
  tokens_.push_back(token);
  root_ = token;
  if (stream_.Push(token)) {
    result_.finish_reason = FinishReason::kStop;
    return true;
  }
  if (result_.new_tokens() >= max_tokens_) {
    result_.finish_reason = FinishReason::kLength;
    return true;
  }
  return false;
}

void SequenceDecoder::Flush(std::string text) {
  if (options_.on_text && (!text.empty() || streamed_ids_ < result_.token_ids.size())) {
    options_.on_text(absl::MakeConstSpan(result_.token_ids).subspan(streamed_ids_), text);
    streamed_ids_ = result_.token_ids.size();
  }
  result_.text += text;
}

void SequenceDecoder::Finish() {
  Flush(stream_.TakeRest());
  result_.decode_seconds = SecondsSince(decode_start_);
  phase_ = Phase::kDone;
}

absl::StatusOr<GenerationResult> SequenceDecoder::TakeResult() {
  if (!status_.ok()) return status_;
  if (phase_ != Phase::kDone) return absl::FailedPreconditionError("the sequence is still decoding");
  return std::move(result_);
}

}  // namespace medusa
