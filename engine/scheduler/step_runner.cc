#include "engine/scheduler/step_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "absl/strings/str_format.h"
#include "engine/medusa/hydra_tree.h"
#include "spdlog/spdlog.h"

namespace medusa {
namespace {

// Context chains are assumed to keep each next token with this chance until measured (optimistic:
// a repeated 2- or 3-gram's continuation usually is the model's), weighted as this many chains.
constexpr double kLookupPriorKeep = 0.8;
constexpr double kLookupPriorWeight = 16;

}  // namespace

StepRunner::StepRunner(Engine& engine, const StepOptions& options)
    : engine_(engine), options_([&] {
        StepOptions o = options;
        o.prefill_chunk = std::max(1, o.prefill_chunk);
        o.max_batch = std::max(1, o.max_batch);
        return o;
      }()) {
  for (int b = 1; b <= options_.max_batch; ++b) {
    const MedusaTree* tree = TreeFor(b);
    if (tree != nullptr && tree->num_nodes() > 1) {
      const MedusaTree* envelope = engine_.dynamic_envelope();
      max_tree_depth_ = std::max(max_tree_depth_, (envelope != nullptr ? envelope : tree)->max_depth());
    }
  }
}

const MedusaTree* StepRunner::TreeFor(int batch) const {
  if (batch <= 0) return nullptr;
  if (const AutoTree* automatic = engine_.auto_tree()) return &automatic->TreeForBatch(batch);
  if (batch == 1 || batch <= options_.medusa_max_batch) return engine_.medusa_tree();
  return nullptr;
}

void StepRunner::DropEnded(std::vector<SequenceDecoder*>& list) {
  list.erase(std::remove_if(list.begin(), list.end(), [](const SequenceDecoder* s) { return s->ended(); }),
             list.end());
}

void StepRunner::PlanDecoding() {
  // Every root's slot first: a tree takes only blocks no root needs.
  for (SequenceDecoder* s : decoding_) {
    if (absl::Status status = s->ReserveRoot(); !status.ok()) {
      s->Fail(absl::ResourceExhaustedError(absl::StrFormat("KV memory ran out after %d generated tokens (%s)",
                                                           s->generated(), status.message())));
    }
  }
  DropEnded(decoding_);
  step_tree_ = TreeFor(static_cast<int>(decoding_.size()));
  step_budget_ = engine_.tree_budget();
  // Dynamic trees sized by the planner: its tree's node count, kept out of the envelope.
  if (engine_.dynamic_envelope() != nullptr && step_tree_ != nullptr && step_tree_->num_nodes() > 1) {
    step_budget_ = step_tree_->num_nodes() - 1;
    step_tree_ = engine_.dynamic_envelope();
  }
  if (options_.plain_probe_every > 0 && step_tree_ != nullptr && step_tree_->num_nodes() > 1 &&
      std::all_of(decoding_.begin(), decoding_.end(),
                  [](const SequenceDecoder* s) { return s->request().sampling.greedy(); }) &&
      ++tree_steps_since_probe_ >= options_.plain_probe_every) {
    tree_steps_since_probe_ = 0;
    step_tree_ = nullptr;  // a plain probe step
  }
  const int lookup_budget = step_tree_ != nullptr ? LookupBudget(static_cast<int>(decoding_.size())) : 0;
  for (SequenceDecoder* s : decoding_) {
    absl::Status status = s->PlanTree(step_tree_);
    if (status.ok() && lookup_budget > 0) status = s->PlanLookupDraft(lookup_budget);
    if (!status.ok()) s->Fail(status);
  }
  DropEnded(decoding_);
  // The heads' top tokens for every sequence verifying the step's tree, in one call.
  head_hidden_.clear();
  int rows = 0;
  for (SequenceDecoder* s : decoding_) {
    if (!s->needs_head_topk()) continue;
    head_hidden_.insert(head_hidden_.end(), s->hidden().begin(), s->hidden().end());
    ++rows;
  }
  head_topk_sizes_.clear();
  if (rows > 0 && engine_.backend().medusa_head_kind() == HeadKind::kHydra) return BuildHydraTrees();
  if (rows > 0 && step_budget_ > 0) return BuildDynamicTrees(rows);
  if (rows > 0) {
    for (int h = 0; h < step_tree_->num_heads_used(); ++h) head_topk_sizes_.push_back(step_tree_->topk(h));
    if (absl::Status status = engine_.backend().MedusaHeadTopK(head_hidden_, rows, head_topk_sizes_, &head_topk_);
        !status.ok()) {
      for (SequenceDecoder* s : decoding_) {
        if (s->needs_head_topk()) s->Fail(status);
      }
      DropEnded(decoding_);
      rows = 0;
    }
  }
  const size_t per_row = rows > 0 ? head_topk_.size() / rows : 0;
  int row = 0;
  for (SequenceDecoder* s : decoding_) {
    absl::Span<const int32_t> topk;
    if (rows > 0 && s->needs_head_topk()) topk = absl::MakeConstSpan(head_topk_).subspan(row++ * per_row, per_row);
    if (absl::Status status = s->BuildCandidates(topk); !status.ok()) s->Fail(status);
  }
  DropEnded(decoding_);
}

void StepRunner::BuildDynamicTrees(int rows) {
  const int heads = step_tree_->num_heads_used();
  const absl::Span<const int32_t> draft = engine_.backend().medusa_draft_vocab();
  const int width = draft.empty() ? engine_.config().vocab_size : static_cast<int>(draft.size());
  absl::Status status = engine_.backend().MedusaHeadLogits(head_hidden_, rows, heads, &head_logits_);
  int row = 0;
  for (SequenceDecoder* s : decoding_) {
    if (!s->needs_head_topk()) {
      if (absl::Status built = s->BuildCandidates({}); !built.ok()) s->Fail(built);
      continue;
    }
    const size_t per_row = static_cast<size_t>(heads) * width;
    absl::StatusOr<HeadProposals> proposals =
        status.ok() ? ProposalsFromLogits(absl::MakeConstSpan(head_logits_).subspan(row * per_row, per_row), width,
                                          draft, step_tree_->topk_per_head(), engine_.head_temperature())
                    : absl::StatusOr<HeadProposals>(status);
    ++row;
    if (absl::Status built = proposals.ok() ? s->BuildDynamicCandidates(*proposals, step_budget_) : proposals.status();
        !built.ok()) {
      s->Fail(built);
    }
  }
  DropEnded(decoding_);
}

int StepRunner::LookupBudget(int batch) const {
  const int most = engine_.options().lookup_tokens;
  const MedusaTree* chosen = TreeFor(batch);
  if (most <= 0 || chosen == nullptr || chosen->num_nodes() <= 1) return 0;
  const AutoTree* automatic = engine_.auto_tree();
  if (automatic == nullptr) return most;
  const std::map<int, TreeCost>& costs = automatic->CostsForBatch(batch);
  if (costs.empty()) return std::min(most, chosen->num_nodes() - 1);
  const auto heads = costs.find(chosen->num_nodes() - 1);
  double best_speedup = heads != costs.end() ? heads->second.expected_speedup : 1.0;
  int best = 0;
  double tokens = 1.0;  // expected tokens of a step verifying a chain of n
  for (int n = 1; n <= most; ++n) {
    tokens += LookupKeepRate(n);
    const auto cost = costs.find(n);
    if (cost == costs.end()) continue;  // a size the auto tree did not time
    if (tokens / cost->second.overhead > best_speedup) {
      best_speedup = tokens / cost->second.overhead;
      best = n;
    }
  }
  return best;
}

double StepRunner::LookupKeepRate(int depth) const {
  const size_t d = depth - 1;
  const double drafted = d < lookup_drafted_.size() ? lookup_drafted_[d] : 0;
  const double kept = d < lookup_kept_.size() ? lookup_kept_[d] : 0;
  return (kept + kLookupPriorWeight * std::pow(kLookupPriorKeep, depth)) / (drafted + kLookupPriorWeight);
}

void StepRunner::CountLookupKept(const SequenceDecoder& s) {
  if (!s.lookup_drafted()) return;
  const int chain = s.planned_tree().num_nodes() - 1;
  if (static_cast<int>(lookup_drafted_.size()) < chain) {
    lookup_drafted_.resize(chain, 0);
    lookup_kept_.resize(chain, 0);
  }
  for (int d = 0; d < chain; ++d) {
    ++lookup_drafted_[d];
    lookup_kept_[d] += s.last_accepted() > d;
  }
}

int StepRunner::HydraBudget() const {
  const int planned = step_tree_->num_nodes() - 1;  // the nodes whose KV slots were reserved
  return engine_.tree_budget() > 0 ? std::min(engine_.tree_budget(), planned) : planned;
}

void StepRunner::BuildHydraTrees() {
  const absl::Span<const int32_t> draft = engine_.backend().medusa_draft_vocab();
  const int width = draft.empty() ? engine_.config().vocab_size : static_cast<int>(draft.size());
  const std::vector<double>& temperature = engine_.head_temperature();
  HydraTreeOptions options = engine_.hydra_tree_options();
  options.budget = HydraBudget();
  options.topk = std::min(options.topk, width);
  std::vector<SequenceDecoder*> growing;
  std::vector<HydraTreeBuilder> trees;
  for (SequenceDecoder* s : decoding_) {
    if (!s->needs_head_topk()) continue;
    HydraTreeOptions own = options;
    own.max_depth = std::min(engine_.backend().num_medusa_heads(), s->depth_room());
    growing.push_back(s);
    trees.emplace_back(own, s->root());
  }
  kernels::TopK selector;
  std::vector<int32_t> ids;
  std::vector<double> probability;
  absl::Status status;
  for (int depth = 0; status.ok(); ++depth) {
    head_hidden_.clear();
    path_tokens_.clear();
    int rows = 0;
    for (size_t i = 0; i < trees.size(); ++i) {
      for (int node : trees[i].Frontier()) {
        head_hidden_.insert(head_hidden_.end(), growing[i]->hidden().begin(), growing[i]->hidden().end());
        const std::vector<int32_t> path = trees[i].PathTokens(node);
        path_tokens_.insert(path_tokens_.end(), path.begin(), path.end());
        ++rows;
      }
    }
    if (rows == 0) break;
    status = engine_.backend().HydraHeadLogits(head_hidden_, path_tokens_, rows, depth, &head_logits_);
    const double t = depth < static_cast<int>(temperature.size()) ? temperature[depth] : 1.0;
    int row = 0;
    for (HydraTreeBuilder& tree : trees) {
      for (int node : tree.Frontier()) {
        if (!status.ok()) break;
        status = RowProposals(absl::MakeConstSpan(head_logits_).subspan(static_cast<size_t>(row++) * width, width),
                              draft, options.topk, t, &selector, &ids, &probability);
        if (status.ok()) status = tree.AddChildren(node, ids, probability);
      }
      tree.Advance();
    }
  }
  size_t i = 0;
  for (SequenceDecoder* s : decoding_) {
    absl::Status built;
    if (!s->needs_head_topk()) {
      built = s->BuildCandidates({});
    } else {
      built = status.ok() ? s->BuildGrownCandidates(trees[i].Paths(), trees[i].Tokens()) : status;
      ++i;
    }
    if (!built.ok()) s->Fail(built);
  }
  DropEnded(decoding_);
}

const StepReport* StepRunner::Run(absl::Span<SequenceDecoder* const> sequences) {
  const SequenceDecoder::Clock::time_point start = SequenceDecoder::Clock::now();
  decoding_.clear();
  prefilling_.clear();
  for (SequenceDecoder* s : sequences) {
    if (!s->ended()) (s->prefilling() ? prefilling_ : decoding_).push_back(s);
  }
  PlanDecoding();

  batch_.Clear();
  bool want_hidden = false;
  report_.medusa = false;
  report_.tree_nodes = 1;
  report_.lookup_chains = 0;
  for (SequenceDecoder* s : decoding_) {
    s->AppendStep(batch_);
    report_.lookup_chains += s->lookup_drafted();
    want_hidden |= s->wants_hidden();
    if (s->planned_tree().num_nodes() > 1) {
      report_.medusa = true;
      report_.tree_nodes = s->planned_tree().num_nodes();
    }
  }
  report_.prefill_tokens = 0;
  for (SequenceDecoder* s : prefilling_) {
    s->AppendPrefill(batch_, options_.prefill_chunk);
    report_.prefill_tokens += s->last_prefill_count();
    want_hidden |= s->wants_hidden();
  }
  if (batch_.tokens.empty()) return nullptr;
  // Greedy sequences read each row's argmax; only sampling ones need the logits back.
  const bool outputs = !batch_.output_rows.empty();
  bool want_logits = false;
  for (SequenceDecoder* s : decoding_) want_logits |= s->wants_logits();
  for (SequenceDecoder* s : prefilling_) want_logits |= s->wants_logits();
  batch_.want_logits = outputs && want_logits;
  batch_.want_argmax = outputs;
  batch_.want_hidden = outputs && want_hidden;
  if (absl::Status status = engine_.backend().Forward(batch_, &forward_); !status.ok()) {
    spdlog::error("forward pass failed: {}", status.ToString());
    for (SequenceDecoder* s : decoding_) s->Fail(status);
    for (SequenceDecoder* s : prefilling_) s->Fail(status);
    return nullptr;
  }

  report_.batch_size = static_cast<int>(decoding_.size());
  report_.tokens = 0;
  report_.first_tokens = 0;
  report_.accepted.clear();
  for (SequenceDecoder* s : decoding_) {
    if (absl::Status status = s->AfterForward(forward_, start); !status.ok()) s->Fail(status);
    CountLookupKept(*s);
    report_.tokens += s->last_emitted();
    report_.accepted.push_back(s->last_accepted());
  }
  for (SequenceDecoder* s : prefilling_) {
    if (absl::Status status = s->AfterForward(forward_, start); !status.ok()) s->Fail(status);
    report_.tokens += s->last_emitted();
    report_.first_tokens += s->last_emitted() > 0 ? 1 : 0;
  }
  report_.seconds = std::chrono::duration<double>(SequenceDecoder::Clock::now() - start).count();
  return &report_;
}

}  // namespace medusa
