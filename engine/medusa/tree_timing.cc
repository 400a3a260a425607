#include "engine/medusa/tree_timing.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace medusa {
namespace {

using Clock = std::chrono::steady_clock;

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

absl::Status CheckTimingInputs(Engine& engine, absl::Span<const MedusaTree> trees,
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
    if (tree.num_heads_used() > 0 && tree.num_heads_used() > engine.backend().num_medusa_heads()) {
      return absl::InvalidArgumentError(absl::StrCat("a tree of depth ", tree.max_depth(), " needs ",
                                                     tree.num_heads_used(), " Medusa heads; ",
                                                     engine.backend().num_medusa_heads(), " are loaded"));
    }
  }
  return absl::OkStatus();
}

// Sequences with `context` cached tokens each and room for the largest tree after them.
// The KV blocks return when the vector goes away.
absl::StatusOr<std::vector<kv::SequenceKv>> PrefillSequences(Engine& engine, int count, int context,
                                                             int tree_slots) {
  const int slots = context + tree_slots;
  const int blocks_each = (slots + engine.kv_block_size() - 1) / engine.kv_block_size();
  if (static_cast<int64_t>(blocks_each) * count > engine.kv_allocator().num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "timing ", count, " sequences of ", slots, " KV slots needs ", blocks_each * count,
        " KV blocks but only ", engine.kv_allocator().num_free(), " are free: raise --kv-cache-mb"));
  }
  std::vector<kv::SequenceKv> seqs;
  kernels::ForwardBatch batch;
  kernels::ForwardResult result;
  const int vocab = engine.config().vocab_size;
  for (int s = 0; s < count; ++s) {
    seqs.push_back(engine.NewSequence());
    kv::SequenceKv& seq = seqs.back();
    RETURN_IF_ERROR(seq.Reserve(slots));
    for (int begin = 0; begin < context; begin += engine.options().prefill_chunk) {
      const int end = std::min(context, begin + engine.options().prefill_chunk);
      batch.Clear();
      batch.block_tables.push_back(seq.block_table());
      for (int i = begin; i < end; ++i) {
        batch.tokens.push_back({.token = TimingToken(s, i, vocab), .position = i, .seq = 0, .kv_index = i,
                                .attend_prefix = i + 1});
      }
      batch.want_logits = false;
      batch.want_hidden = false;
      RETURN_IF_ERROR(engine.backend().Forward(batch, &result));
    }
    seq.SetLength(context);
  }
  return seqs;
}

// One verification step of `tree` for sequences [0, b): what the decoder sends, per sequence.
kernels::ForwardBatch TreeStepBatch(const MedusaTree& tree, absl::Span<const kv::SequenceKv> seqs, int b,
                                    int context, int vocab) {
  kernels::ForwardBatch batch;
  for (int s = 0; s < b; ++s) {
    batch.block_tables.push_back(seqs[s].block_table());
    for (int n = 0; n < tree.num_nodes(); ++n) {
      const absl::Span<const int> ancestors = tree.ancestors(n);
      batch.output_rows.push_back(static_cast<int32_t>(batch.tokens.size()));
      batch.tokens.push_back({.token = TimingToken(s, context + n, vocab), .position = context + tree.depth(n),
                              .seq = s, .kv_index = context + n, .attend_prefix = context,
                              .extra_begin = static_cast<int32_t>(batch.extra_indices.size()),
                              .extra_count = static_cast<int32_t>(ancestors.size())});
      for (int a : ancestors) batch.extra_indices.push_back(context + a);
    }
  }
  batch.want_logits = true;
  batch.want_hidden = tree.num_nodes() > 1;
  return batch;
}

}  // namespace

absl::StatusOr<TreeTimings> TimeTreeSteps(Engine& engine, absl::Span<const MedusaTree> trees,
                                          const TreeTimingOptions& options) {
  RETURN_IF_ERROR(CheckTimingInputs(engine, trees, options));
  int max_nodes = 0, max_depth = 0;
  for (const MedusaTree& tree : trees) {
    max_nodes = std::max(max_nodes, tree.num_nodes());
    max_depth = std::max(max_depth, tree.max_depth());
  }
  TreeTimings timings;
  timings.batch_sizes = options.batch_sizes;
  // The deepest node's position must stay inside the model's context.
  timings.context_tokens = std::min(options.context_tokens, engine.config().max_seq_len - max_depth - 1);
  if (timings.context_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("the model's context (", engine.config().max_seq_len,
                                                   " tokens) has no room for a tree of depth ", max_depth));
  }
  const int max_batch = *std::max_element(options.batch_sizes.begin(), options.batch_sizes.end());
  ASSIGN_OR_RETURN(std::vector<kv::SequenceKv> seqs,
                   PrefillSequences(engine, max_batch, timings.context_tokens, max_nodes));

  const int vocab = engine.config().vocab_size;
  const size_t dim = engine.config().dim;
  kernels::ForwardResult result;
  std::vector<float> head_logits;
  for (int b : options.batch_sizes) {
    std::vector<kernels::ForwardBatch> batches;
    for (const MedusaTree& tree : trees) {
      batches.push_back(TreeStepBatch(tree, seqs, b, timings.context_tokens, vocab));
    }
    auto run_step = [&](size_t t) -> absl::Status {
      RETURN_IF_ERROR(engine.backend().Forward(batches[t], &result));
      if (trees[t].num_nodes() == 1) return absl::OkStatus();
      return engine.backend().MedusaHeadLogits(absl::MakeConstSpan(result.hidden).first(b * dim), b,
                                               trees[t].num_heads_used(), &head_logits);
    };
    std::vector<std::vector<double>> samples(trees.size());
    for (int round = 0; round < options.warmup + options.repeats; ++round) {
      for (size_t t = 0; t < trees.size(); ++t) {
        const Clock::time_point start = Clock::now();
        RETURN_IF_ERROR(run_step(t));
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        if (round >= options.warmup) samples[t].push_back(ms);
      }
    }
    std::vector<double>& row = timings.step_ms.emplace_back();
    for (const std::vector<double>& s : samples) row.push_back(Median(s));
    spdlog::debug("tree timing: batch {}: {} ms", b, absl::StrJoin(row, ", "));
  }
  return timings;
}

absl::StatusOr<nlohmann::json> MeasureAutoTree(Engine& engine, const Calibration& calibration,
                                               const AutoTreeOptions& options) {
  const int heads = engine.backend().num_medusa_heads();
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
  ASSIGN_OR_RETURN(TreeTimings timings, TimeTreeSteps(engine, trees, options.timing));

  const int threads = engine.options().backend.threads > 0 ? engine.options().backend.threads
                                                           : static_cast<int>(std::thread::hardware_concurrency());
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
      {"machine", {{"backend", engine.backend().Name()}, {"threads", threads}, {"id", engine.backend().MachineId()}}},
      {"context_tokens", timings.context_tokens},
      {"repeats", options.timing.repeats},
      // What the choice assumed of the heads: a measurement made for other
      // accuracies is stale (MergeAutoTreeMeasurement drops it).
      {"topk_accuracy", calibration.topk_accuracy},
      {"measurements", measurements},
      {"choice", choice}};
}

}  // namespace medusa
