#include "engine/medusa/tree_timing.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/generate/batch_planner.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace medusa {
namespace {

using Clock = std::chrono::steady_clock;

// Before each timed step, untimed steps of the same tree for at least this long. A step is
// slower for a while after a bigger one (caches, the clock of a core that ran wide vector code):
// on the 2-core Xeon a plain step of SmolLM2's Q4_1 file took 5.3 ms right after a 64-node step
// and 3.2 ms after four plain steps, so timing each step right after another tree's made every
// small tree look cheaper than it is.
constexpr double kLeadMs = 20.0;
// A sample is the mean step time over at least this long: single steps of a few milliseconds
// on a shared machine varied by 20% or more, and five of them did not rank trees 10% apart.
constexpr double kSampleMs = 15.0;
// A tree whose samples add up to this much time stops being sampled after kMinSamples: steps of
// a second (a 64-node tree at batch 16) would otherwise make start-up measurement take minutes.
constexpr double kEnoughMs = 1000.0;
constexpr size_t kMinSamples = 5;

double Median(std::vector<double> values) {
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  if (values.size() % 2 == 1) return values[mid];
  return 0.5 * (values[mid] + *std::max_element(values.begin(), values.begin() + mid));
}

// Token ids for timing: any valid ids do (the cost does not depend on them), spread
// over the vocabulary so that no two sequences are alike.
int32_t TimingToken(int seq, int index, int vocab) {
  return static_cast<int32_t>((static_cast<int64_t>(index) * 7919 + seq * 104729 + 1) % vocab);
}

absl::Status CheckTimingInputs(const TimingTarget& target, absl::Span<const MedusaTree> trees,
                               const TreeTimingOptions& options) {
  if (trees.empty()) return absl::InvalidArgumentError("no trees to time");
  if (options.batch_sizes.empty()) return absl::InvalidArgumentError("no batch sizes to time");
  for (int b : options.batch_sizes) {
    if (b < 1) return absl::InvalidArgumentError(absl::StrCat("batch size ", b, " is not positive"));
  }
  if (options.context_tokens < 1 || options.repeats < 1 || options.warmup < 0) {
    return absl::InvalidArgumentError(absl::StrCat("context_tokens (", options.context_tokens, ") and repeats (",
                                                   options.repeats, ") must be positive, warmup (",
                                                   options.warmup, ") not negative"));
  }
  for (const MedusaTree& tree : trees) {
    if (tree.num_heads_used() > 0 && tree.num_heads_used() > target.backend.num_medusa_heads()) {
      return absl::InvalidArgumentError(absl::StrCat("a tree of depth ", tree.max_depth(), " needs ",
                                                     tree.num_heads_used(), " Medusa heads; ",
                                                     target.backend.num_medusa_heads(), " are loaded"));
    }
  }
  return absl::OkStatus();
}

// `count` timing tokens of sequence `seq` from index `first` on.
std::vector<int32_t> TimingTokens(int seq, int first, int count, int vocab) {
  std::vector<int32_t> tokens(count);
  for (int i = 0; i < count; ++i) tokens[i] = TimingToken(seq, first + i, vocab);
  return tokens;
}

// Sequences with `context` cached tokens each and room for the largest tree after them.
// The KV blocks return when the vector goes away.
absl::StatusOr<std::vector<kv::SequenceKv>> PrefillSequences(const TimingTarget& target, int count, int context,
                                                             int tree_slots) {
  const int slots = context + tree_slots;
  const int blocks_each = (slots + target.kv_block_size - 1) / target.kv_block_size;
  if (static_cast<int64_t>(blocks_each) * count > target.kv_pool.num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("timing ", count, " sequences of ", slots, " KV slots needs ",
                                                     blocks_each * count, " KV blocks but only ",
                                                     target.kv_pool.num_free(), " are free: raise --kv-cache-mb"));
  }
  std::vector<kv::SequenceKv> seqs;
  kernels::ForwardBatch batch;
  kernels::ForwardResult result;
  const int vocab = target.backend.config().vocab_size;
  for (int s = 0; s < count; ++s) {
    kv::SequenceKv& seq = seqs.emplace_back(&target.kv_pool, target.kv_block_size);
    RETURN_IF_ERROR(seq.Reserve(slots));
    for (int begin = 0; begin < context; begin += target.prefill_chunk) {
      const int end = std::min(context, begin + target.prefill_chunk);
      batch.Clear();
      AppendCausal(batch, AddSequence(batch, seq.block_table()), TimingTokens(s, begin, end - begin, vocab), begin,
                   /*want_last_row=*/false);
      batch.want_logits = false;
      batch.want_hidden = false;
      RETURN_IF_ERROR(target.backend.Forward(batch, &result));
    }
    seq.SetLength(context);
  }
  return seqs;
}

// One verification step of `tree` for sequences [0, b), as the decoding loop builds it.
kernels::ForwardBatch TreeStepBatch(const MedusaTree& tree, absl::Span<const kv::SequenceKv> seqs, int b,
                                    int context, int vocab) {
  kernels::ForwardBatch batch;
  for (int s = 0; s < b; ++s) {
    AppendTree(batch, AddSequence(batch, seqs[s].block_table()), tree,
               TimingTokens(s, context, tree.num_nodes(), vocab), context);
  }
  // As a greedy step: the rows' argmax back, not their logits.
  batch.want_logits = false;
  batch.want_argmax = true;
  batch.want_hidden = tree.num_nodes() > 1;
  return batch;
}

// A Hydra step's head work for `tree`: a head call per depth on every node there that has
// children (the expansions a grown tree of this size makes), for each of `batch` sequences.
absl::Status RunHydraHeads(kernels::Backend& backend, const MedusaTree& tree, absl::Span<const float> hidden,
                           int batch) {
  const size_t dim = backend.config().dim;
  std::vector<float> rows_hidden;
  std::vector<int32_t> paths;
  std::vector<float> logits;
  for (int depth = 0; depth < tree.max_depth(); ++depth) {
    int expanded = 0;
    for (int n = 0; n < tree.num_nodes(); ++n) expanded += tree.depth(n) == depth && !tree.children(n).empty();
    const int rows = expanded * batch;
    rows_hidden.clear();
    for (int r = 0; r < rows; ++r) {
      const float* h = hidden.data() + (r % batch) * dim;
      rows_hidden.insert(rows_hidden.end(), h, h + dim);
    }
    paths.assign(static_cast<size_t>(rows) * (depth + 1), 0);
    RETURN_IF_ERROR(backend.HydraHeadLogits(rows_hidden, paths, rows, depth, &logits));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TreeTimings> TimeTreeSteps(const TimingTarget& target, absl::Span<const MedusaTree> trees,
                                          const TreeTimingOptions& options) {
  RETURN_IF_ERROR(CheckTimingInputs(target, trees, options));
  int max_nodes = 0, max_depth = 0;
  for (const MedusaTree& tree : trees) {
    max_nodes = std::max(max_nodes, tree.num_nodes());
    max_depth = std::max(max_depth, tree.max_depth());
  }
  TreeTimings timings;
  timings.batch_sizes = options.batch_sizes;
  // The deepest node's position must stay inside the model's context.
  timings.context_tokens = std::min(options.context_tokens, target.backend.config().max_seq_len - max_depth - 1);
  if (timings.context_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the model's context (", target.backend.config().max_seq_len,
                                                   " tokens) has no room for a tree of depth ", max_depth));
  }
  const int max_batch = *std::max_element(options.batch_sizes.begin(), options.batch_sizes.end());
  ASSIGN_OR_RETURN(std::vector<kv::SequenceKv> seqs,
                   PrefillSequences(target, max_batch, timings.context_tokens, max_nodes));

  const int vocab = target.backend.config().vocab_size;
  const size_t dim = target.backend.config().dim;
  const bool hydra = target.backend.medusa_head_kind() == HeadKind::kHydra;
  kernels::ForwardResult result;
  std::vector<int32_t> head_topk;
  for (int b : options.batch_sizes) {
    std::vector<kernels::ForwardBatch> batches;
    std::vector<std::vector<int>> topk_sizes;
    for (const MedusaTree& tree : trees) {
      batches.push_back(TreeStepBatch(tree, seqs, b, timings.context_tokens, vocab));
      std::vector<int>& k = topk_sizes.emplace_back();
      for (int h = 0; h < tree.num_heads_used(); ++h) k.push_back(tree.topk(h));
    }
    auto run_step = [&](size_t t) -> absl::Status {
      RETURN_IF_ERROR(target.backend.Forward(batches[t], &result));
      if (trees[t].num_nodes() == 1) return absl::OkStatus();
      if (hydra) return RunHydraHeads(target.backend, trees[t], absl::MakeConstSpan(result.hidden).first(b * dim), b);
      return target.backend.MedusaHeadTopK(absl::MakeConstSpan(result.hidden).first(b * dim), b, topk_sizes[t],
                                           &head_topk);
    };
    std::vector<std::vector<double>> samples(trees.size());
    std::vector<double> step_ms(trees.size(), 0.0), timed_ms(trees.size(), 0.0);
    for (int round = 0; round < options.warmup + options.repeats; ++round) {
      for (size_t t = 0; t < trees.size(); ++t) {
        // Big steps vary less: enough of them were timed.
        if (samples[t].size() >= kMinSamples && timed_ms[t] >= kEnoughMs) continue;
        // Trees alternate so that drift falls on all alike, but a timed step follows untimed
        // steps of its own tree, as in decoding (a step longer than that needs none).
        if (step_ms[t] < kLeadMs) {
          const Clock::time_point lead = Clock::now();
          do {
            RETURN_IF_ERROR(run_step(t));
          } while (std::chrono::duration<double, std::milli>(Clock::now() - lead).count() < kLeadMs);
        }
        // One sample: the mean of consecutive steps filling kSampleMs (one step when it is longer).
        const Clock::time_point start = Clock::now();
        int steps = 0;
        double ms = 0.0;
        do {
          RETURN_IF_ERROR(run_step(t));
          ++steps;
          ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        } while (ms < kSampleMs);
        step_ms[t] = ms / steps;
        if (round < options.warmup) continue;
        samples[t].push_back(step_ms[t]);
        timed_ms[t] += ms;
      }
    }
    std::vector<double>& row = timings.step_ms.emplace_back();
    for (const std::vector<double>& s : samples) row.push_back(Median(s));
    spdlog::debug("tree timing: batch {}: {} ms", b, absl::StrJoin(row, ", "));
  }
  return timings;
}

absl::StatusOr<nlohmann::json> MeasureAutoTree(const TimingTarget& target, const Calibration& calibration,
                                               const AutoTreeOptions& options) {
  const int heads = target.backend.num_medusa_heads();
  if (heads < 1) return absl::FailedPreconditionError("measuring Medusa trees needs Medusa heads loaded");
  if (calibration.num_heads() > heads) {
    spdlog::warn("the calibration covers {} heads but {} are loaded: trees use the first {}",
                 calibration.num_heads(), heads, heads);
  }
  const int most = std::min(MaxGreedyNodes(calibration, heads), MedusaTree::kMaxPaths);
  std::set<int> sizes;
  for (int n : options.tree_sizes) {
    if (n < 1) return absl::InvalidArgumentError(absl::StrCat("tree size ", n, " is not positive"));
    if (n > most) {
      spdlog::warn("tree size {} dropped: the calibrated heads allow at most {} nodes", n, most);
      continue;
    }
    sizes.insert(n);
  }
  if (sizes.empty()) return absl::InvalidArgumentError("no tree size left to measure");
  ASSIGN_OR_RETURN(GreedyTree greedy, BuildGreedyTree(calibration, *sizes.rbegin(), heads));

  // Tree 0 is plain decoding; tree i > 0 the greedy tree of size_list[i] nodes.
  std::vector<int> size_list = {0};
  size_list.insert(size_list.end(), sizes.begin(), sizes.end());
  std::vector<MedusaTree> trees;
  for (int n : size_list) {
    ASSIGN_OR_RETURN(MedusaTree tree, MedusaTree::FromPaths(greedy.Prefix(n).paths, heads));
    trees.push_back(std::move(tree));
  }
  ASSIGN_OR_RETURN(TreeTimings timings, TimeTreeSteps(target, trees, options.timing));

  const int threads =
      target.threads > 0 ? target.threads : static_cast<int>(std::thread::hardware_concurrency());
  nlohmann::json measurements = nlohmann::json::array(), choice = nlohmann::json::object();
  for (size_t bi = 0; bi < timings.batch_sizes.size(); ++bi) {
    const int b = timings.batch_sizes[bi];
    const std::vector<double>& ms = timings.step_ms[bi];
    std::vector<double> speedups;  // per tree after the plain one
    for (size_t t = 0; t < size_list.size(); ++t) {
      const double overhead = ms[t] / ms[0];
      const double acceleration = greedy.expected_acceleration(size_list[t]);
      if (t > 0) speedups.push_back(acceleration / overhead);
      measurements.push_back({{"batch_size", b}, {"nodes", size_list[t]}, {"step_ms", ms[t]},
                              {"overhead", overhead}, {"expected_acceleration", acceleration},
                              {"expected_speedup", acceleration / overhead}});
    }
    const int best = ChooseTreeIndex(speedups);
    const int nodes = best < 0 ? 0 : size_list[best + 1];
    nlohmann::json chosen = greedy.Prefix(nodes).ToJson();
    choice[std::to_string(b)] = {{"nodes", nodes}, {"paths", chosen["paths"]},
                                 {"expected_speedup", best < 0 ? 1.0 : speedups[best]}};
  }
  return nlohmann::json{
      {"machine", {{"backend", target.backend.Name()}, {"threads", threads}, {"id", target.backend.MachineId()}}},
      {"context_tokens", timings.context_tokens},
      {"repeats", options.timing.repeats},
      // What the choice assumed of the heads: a measurement made for other
      // accuracies is stale (MergeAutoTreeMeasurement drops it).
      {"topk_accuracy", calibration.topk_accuracy},
      {"measurements", measurements},
      {"choice", choice}};
}

}  // namespace medusa
