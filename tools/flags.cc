#include "tools/flags.h"

#include <cstdint>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "kernels/base/status_macros.h"
#include "tools/engine_flags.h"

// Prompts and requests (generate, client, bench).
ABSL_FLAG(std::string, prompt, "", "Prompt text");
ABSL_FLAG(std::string, prompts, "",
          "JSONL file of prompts: {\"prompt\": ...} or {\"messages\": [{\"role\", \"content\"}]} per line");
ABSL_FLAG(bool, chat, false, "Apply the model's chat template to --prompt / \"prompt\" entries");
ABSL_FLAG(int32_t, max_tokens, 256, "Most tokens to generate per prompt");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 is greedy decoding");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling mass, in (0, 1]");
ABSL_FLAG(int32_t, top_k, 0, "Sample among the k most likely tokens; 0 for all");
ABSL_FLAG(uint64_t, seed, 0, "Random seed (same seed, same output; medusa train: the training's)");
ABSL_FLAG(std::vector<std::string>, stop, {}, "Comma-separated stop strings");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past end-of-sequence tokens (benchmarks)");
ABSL_FLAG(bool, no_medusa, false, "Plain decoding (one token per step) through the same loop, even with --heads");
ABSL_FLAG(std::string, acceptance, "typical",
          "Draft acceptance when sampling (--temperature > 0): typical (the Medusa paper's typical acceptance, "
          "--typical-epsilon/--typical-delta) or rejection (rejection sampling: exactly the model's sampling "
          "distribution)");
ABSL_FLAG(double, typical_epsilon, 0.09,
          "Typical acceptance (--acceptance typical) when sampling: accept x if "
          "p(x) > min(epsilon, delta * exp(-H(p)))");
ABSL_FLAG(double, typical_delta, 0.3, "Typical acceptance delta (see --typical-epsilon)");
ABSL_FLAG(bool, json, false, "Print one JSON object per prompt instead of streaming text");
ABSL_FLAG(std::string, log_level, "warn", "Log level: trace, debug, info, warn, error");

// client, bench
ABSL_FLAG(std::string, addr, "localhost:50051",
          "medusa-server address: HOST:PORT or a gRPC target such as dns:///NAME:PORT (medusa client, bench, "
          "health)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CA certificate(s) that signed the server's: connect over TLS (medusa client, bench, health)");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate for mutual TLS (with --tls-key-file)");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls-cert-file");
ABSL_FLAG(std::string, auth_token_file, "", "File holding the server's bearer token (one line)");
ABSL_FLAG(std::string, lb_policy, "pick_first",
          "How calls spread over the addresses --addr resolves to: pick_first (one connection) or round_robin "
          "(one to each, calls in turn: a headless Kubernetes Service as dns:///NAME:PORT; medusa client, medusa "
          "bench)");
// health
ABSL_FLAG(std::string, service, "",
          "medusa health: the service to ask about (medusa.v1.Generator: ready to generate; medusa.v1.Liveness: "
          "the process is up, loading and draining included; \"\": as the Generator)");
ABSL_FLAG(double, timeout_seconds, 5, "medusa health: how long the check may take, in seconds (0, 3600]");
ABSL_FLAG(int32_t, requests, 0, "medusa bench: requests in all (default: one per prompt)");
ABSL_FLAG(int32_t, concurrency, 16,
          "medusa bench: requests in flight at once; medusa train / calibrate: answers decoded together in one "
          "batched forward pass");

// tree
ABSL_FLAG(std::string, calibration, "",
          "Calibration JSON of the heads: {\"topk_accuracy\": [[top1, ..., top10] per head]}");
ABSL_FLAG(int32_t, nodes, 0, "Nodes of the greedy tree, besides the root");
ABSL_FLAG(std::string, out, "",
          "Output file (medusa tree: stdout for a greedy tree; with --auto, "
          "<heads without .safetensors>.auto_tree.json; medusa train: the heads)");
ABSL_FLAG(bool, auto, false,
          "medusa tree: time greedy trees of each --tree-sizes at each --batch-sizes on this machine "
          "and pick the fastest per batch size (what --tree auto reads)");
ABSL_FLAG(std::vector<std::string>, batch_sizes, std::vector<std::string>({"1", "2", "4", "8", "16"}),
          "Comma-separated batch sizes to time (medusa tree --auto)");
ABSL_FLAG(std::vector<std::string>, tree_sizes, std::vector<std::string>({"1", "2", "4", "8", "16", "32", "64"}),
          "Comma-separated tree sizes (nodes besides the root) to time (medusa tree --auto)");
ABSL_FLAG(int32_t, repeats, 15,
          "Samples per measurement (each the mean step time over at least 15 ms, after 20 ms of untimed steps of "
          "its tree); the median is kept");
ABSL_FLAG(int32_t, context_tokens, 128, "Cached tokens per sequence when timing tree steps");

// train, calibrate
ABSL_FLAG(std::string, seed_prompts, "data/sharegpt_first_turns.json",
          "Seed prompts for self-distillation (ShareGPT conversations: first human turns)");
ABSL_FLAG(int32_t, num_prompts, 1000, "Seed prompts to answer (after de-duplication); 0 for all");
ABSL_FLAG(int32_t, train_rows, 0,
          "Train on the first N positions of the answers alone (the first prompts'); 0: all. One distillation "
          "(--data-cache) then serves runs on less data, for curves of accuracy against data");
ABSL_FLAG(int32_t, max_prompt_tokens, 512, "Skip seed prompts longer than this (tokens, template included)");
ABSL_FLAG(int32_t, gen_tokens, 192, "Most tokens the model writes per seed prompt");
ABSL_FLAG(double, gen_temperature, 0.0, "Temperature of the model's own answers (0: greedy)");
ABSL_FLAG(int32_t, answers_per_prompt, 1,
          "Answers the model writes to each seed prompt: the first at --gen-temperature, the others sampled at "
          "--extra-answer-temperature (more training rows from the same prompts; each answer is cached on its own)");
ABSL_FLAG(double, extra_answer_temperature, 0.7, "Temperature of the answers after the first (--answers-per-prompt)");
ABSL_FLAG(int32_t, num_heads, 4, "Medusa heads to train");
ABSL_FLAG(int32_t, num_layers, 1, "Residual blocks per head");
ABSL_FLAG(std::string, head_type, "medusa",
          "medusa (Medusa-1 heads: each reads the last hidden state) or hydra (sequentially dependent "
          "heads: each also reads the embeddings of the draft tokens before it on its tree path)");
ABSL_FLAG(bool, share_lm_head, false,
          "Heads use the model's classifier as their vocabulary projection (small files) instead "
          "of their own (initialized from it)");
ABSL_FLAG(int32_t, epochs, 1, "Passes over the training rows");
ABSL_FLAG(int32_t, batch_size, 64, "Rows per optimizer step");
ABSL_FLAG(double, lr, 1e-3, "Peak learning rate (AdamW; linear warm-up, then cosine decay)");
ABSL_FLAG(double, weight_decay, 0.0, "AdamW decoupled weight decay");
ABSL_FLAG(double, teacher_weight, 0.0,
          "What the heads learn: 0, the token the model wrote at each position; 1, the model's own distribution "
          "over it (Hydra++'s teacher objective); in between, that mix of the two");
ABSL_FLAG(std::string, dtype, "f16", "Heads file precision (medusa train), checkpoint precision (medusa make-model): "
          "f32, f16 or bf16");
ABSL_FLAG(std::string, shape, "", "medusa make-model: the model shape (llama-2-7b, llama-3-8b, mistral-7b, "
          "smollm2-135m, tiny)");
ABSL_FLAG(std::string, from, "",
          "medusa make-model: a model (GGUF, llama2.c or Hugging Face) to write in Hugging Face's layout instead of "
          "random weights (quantized weights dequantized; --dtype f32 keeps them exact)");
ABSL_FLAG(double, draft_coverage, 0.995,
          "Draft vocabulary: the most frequent tokens of the model's answers that make up this share of "
          "them (the heads propose only these; cheaper projections, same output); 0: the whole vocabulary");
ABSL_FLAG(int32_t, draft_min_tokens, 1024, "Draft vocabulary: at least this many tokens");
ABSL_FLAG(std::string, checkpoint, "",
          "Training checkpoint (default <out>.ckpt); training resumes from it when present");
ABSL_FLAG(std::string, data_cache, "",
          "Self-distillation rows cache (default <out>.distill.safetensors; 'none' for no cache)");
ABSL_FLAG(std::string, calibration_prompts, "data/alpaca_eval.json",
          "Held-out prompts for per-head top-k accuracy (AlpacaEval instructions)");
ABSL_FLAG(int32_t, calibration_count, 100, "Held-out prompts to answer for calibration");
ABSL_FLAG(std::string, calibration_out, "", "Calibration JSON to write (default <heads>.calibration.json)");

namespace medusa::tools {
namespace {

absl::StatusOr<RequestFlags> ReadRequestFlags() {
  RequestFlags r;
  r.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  r.temperature = absl::GetFlag(FLAGS_temperature);
  r.top_p = absl::GetFlag(FLAGS_top_p);
  r.top_k = absl::GetFlag(FLAGS_top_k);
  r.seed = absl::GetFlag(FLAGS_seed);
  r.stop = absl::GetFlag(FLAGS_stop);
  r.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  r.no_medusa = absl::GetFlag(FLAGS_no_medusa);
  r.acceptance = absl::GetFlag(FLAGS_acceptance);
  r.typical_epsilon = absl::GetFlag(FLAGS_typical_epsilon);
  r.typical_delta = absl::GetFlag(FLAGS_typical_delta);
  if (r.acceptance != "typical" && r.acceptance != "rejection") {
    return absl::InvalidArgumentError("--acceptance must be typical or rejection, got '" + r.acceptance + "'");
  }
  return r;
}

// What generate and client share: the prompts, how each is generated, and --json.
absl::Status ReadPromptedRequests(PromptSource* prompts, RequestFlags* request, bool* json) {
  *prompts = {.prompt = absl::GetFlag(FLAGS_prompt),
              .prompts_file = absl::GetFlag(FLAGS_prompts),
              .chat = absl::GetFlag(FLAGS_chat)};
  ASSIGN_OR_RETURN(*request, ReadRequestFlags());
  *json = absl::GetFlag(FLAGS_json);
  return absl::OkStatus();
}

DistillFlags ReadDistillFlags() {
  return {.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens),
          .gen_tokens = absl::GetFlag(FLAGS_gen_tokens),
          .concurrency = absl::GetFlag(FLAGS_concurrency)};
}

CalibrationFlags ReadCalibrationFlags() {
  return {.prompts_file = absl::GetFlag(FLAGS_calibration_prompts),
          .count = absl::GetFlag(FLAGS_calibration_count),
          .out = absl::GetFlag(FLAGS_calibration_out)};
}

// The engine of train and calibrate: the base model alone (their heads are trained or
// evaluated apart from it).
absl::StatusOr<EngineOptions> BaseModelFlags() {
  ASSIGN_OR_RETURN(EngineOptions engine, EngineOptionsFromFlags());
  if (engine.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  engine.heads_path.clear();
  engine.tree.clear();
  return engine;
}

}  // namespace

std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") break;  // the rest are positional
    if (arg.rfind("--", 0) != 0) continue;
    size_t end = arg.find('=');
    if (end == std::string::npos) end = arg.size();
    for (size_t c = 2; c < end; ++c) {
      if (arg[c] == '-') arg[c] = '_';
    }
  }
  return args;
}

std::string LogLevelFlag() { return absl::GetFlag(FLAGS_log_level); }

absl::StatusOr<GenerateCommand> GenerateFlags() {
  GenerateCommand c;
  ASSIGN_OR_RETURN(c.engine, EngineOptionsFromFlags());
  if (c.engine.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  RETURN_IF_ERROR(ReadPromptedRequests(&c.prompts, &c.request, &c.json));
  return c;
}

namespace {

// --addr and the TLS and token flags of client and bench.
absl::StatusOr<ServerConnection> ServerConnectionFlags() {
  ServerConnection c;
  c.addr = absl::GetFlag(FLAGS_addr);
  c.tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  c.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  c.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  c.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  c.lb_policy = absl::GetFlag(FLAGS_lb_policy);
  if (c.lb_policy != "pick_first" && c.lb_policy != "round_robin") {
    return absl::InvalidArgumentError("--lb-policy must be pick_first or round_robin, got '" + c.lb_policy + "'");
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert-file and --tls-key-file go together");
  }
  if (!c.tls_cert_file.empty() && c.tls_ca_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert-file needs --tls-ca-file (a client certificate is sent over TLS)");
  }
  return c;
}

}  // namespace

absl::StatusOr<ClientCommand> ClientFlags() {
  ClientCommand c;
  ASSIGN_OR_RETURN(c.server, ServerConnectionFlags());
  RETURN_IF_ERROR(ReadPromptedRequests(&c.prompts, &c.request, &c.json));
  return c;
}

absl::StatusOr<HealthCommand> HealthFlags() {
  HealthCommand c;
  ASSIGN_OR_RETURN(c.server, ServerConnectionFlags());
  c.service = absl::GetFlag(FLAGS_service);
  c.timeout_seconds = absl::GetFlag(FLAGS_timeout_seconds);
  // A container runtime kills a check that outlives its own timeout: an hour is already too long.
  if (!(c.timeout_seconds > 0 && c.timeout_seconds <= 3600)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--timeout-seconds must be in (0, 3600], got %g", c.timeout_seconds));
  }
  return c;
}

absl::StatusOr<BenchCommand> BenchFlags() {
  BenchCommand c;
  ASSIGN_OR_RETURN(c.server, ServerConnectionFlags());
  c.prompts_file = absl::GetFlag(FLAGS_prompts);
  if (c.prompts_file.empty()) return absl::InvalidArgumentError("medusa bench needs --prompts FILE.jsonl");
  c.chat = absl::GetFlag(FLAGS_chat);
  c.concurrency = absl::GetFlag(FLAGS_concurrency);
  if (c.concurrency < 1) return absl::InvalidArgumentError("--concurrency must be >= 1");
  c.requests = absl::GetFlag(FLAGS_requests);
  ASSIGN_OR_RETURN(c.request, ReadRequestFlags());
  c.json = absl::GetFlag(FLAGS_json);
  return c;
}

absl::StatusOr<TreeCommand> TreeFlags() {
  TreeCommand c;
  c.calibration = absl::GetFlag(FLAGS_calibration);
  if (c.calibration.empty()) return absl::InvalidArgumentError("--calibration FILE.json is required");
  c.nodes = absl::GetFlag(FLAGS_nodes);
  c.out = absl::GetFlag(FLAGS_out);
  c.automatic = absl::GetFlag(FLAGS_auto);
  c.batch_sizes = absl::GetFlag(FLAGS_batch_sizes);
  c.tree_sizes = absl::GetFlag(FLAGS_tree_sizes);
  c.repeats = absl::GetFlag(FLAGS_repeats);
  c.context_tokens = absl::GetFlag(FLAGS_context_tokens);
  if (c.repeats < 1 || c.context_tokens < 1) {
    return absl::InvalidArgumentError("--repeats and --context-tokens must be positive");
  }
  if (c.automatic) {
    ASSIGN_OR_RETURN(c.engine, EngineOptionsFromFlags());
    if (c.engine.model_path.empty() || c.engine.heads_path.empty()) {
      return absl::InvalidArgumentError("--auto needs --model and --heads (and --calibration)");
    }
    c.engine.tree = "chain";  // any tree the heads can run; the measurement makes its own
  }
  return c;
}

absl::StatusOr<TrainCommand> TrainFlags() {
  TrainCommand c;
  ASSIGN_OR_RETURN(c.engine, BaseModelFlags());
  c.out = absl::GetFlag(FLAGS_out);
  if (c.out.empty()) return absl::InvalidArgumentError("--out HEADS.safetensors is required");
  c.seed_prompts = absl::GetFlag(FLAGS_seed_prompts);
  c.num_prompts = absl::GetFlag(FLAGS_num_prompts);
  c.train_rows = absl::GetFlag(FLAGS_train_rows);
  if (c.train_rows < 0)
    return absl::InvalidArgumentError(absl::StrFormat("--train-rows must be >= 0, got %d", c.train_rows));
  c.gen_temperature = absl::GetFlag(FLAGS_gen_temperature);
  c.answers_per_prompt = absl::GetFlag(FLAGS_answers_per_prompt);
  c.extra_answer_temperature = absl::GetFlag(FLAGS_extra_answer_temperature);
  if (c.answers_per_prompt < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--answers-per-prompt must be >= 1, got %d", c.answers_per_prompt));
  }
  if (c.answers_per_prompt > 1 && !(c.extra_answer_temperature > 0)) {
    return absl::InvalidArgumentError(
        "--extra-answer-temperature must be > 0 with --answers-per-prompt above 1 (greedy answers would repeat the "
        "first)");
  }
  c.num_heads = absl::GetFlag(FLAGS_num_heads);
  c.num_layers = absl::GetFlag(FLAGS_num_layers);
  c.head_type = absl::GetFlag(FLAGS_head_type);
  c.share_lm_head = absl::GetFlag(FLAGS_share_lm_head);
  c.epochs = absl::GetFlag(FLAGS_epochs);
  c.batch_size = absl::GetFlag(FLAGS_batch_size);
  c.lr = absl::GetFlag(FLAGS_lr);
  c.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  c.teacher_weight = absl::GetFlag(FLAGS_teacher_weight);
  if (!(c.teacher_weight >= 0 && c.teacher_weight <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat("--teacher-weight must be in [0, 1], got %g", c.teacher_weight));
  }
  c.seed = absl::GetFlag(FLAGS_seed);
  c.dtype = absl::GetFlag(FLAGS_dtype);
  c.draft_coverage = absl::GetFlag(FLAGS_draft_coverage);
  if (!(c.draft_coverage >= 0 && c.draft_coverage <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat("--draft-coverage must be in [0, 1], got %g", c.draft_coverage));
  }
  c.draft_min_tokens = absl::GetFlag(FLAGS_draft_min_tokens);
  if (c.draft_min_tokens < 1) return absl::InvalidArgumentError("--draft-min-tokens must be >= 1");
  c.checkpoint = absl::GetFlag(FLAGS_checkpoint);
  c.data_cache = absl::GetFlag(FLAGS_data_cache);
  c.distill = ReadDistillFlags();
  c.calibration = ReadCalibrationFlags();
  return c;
}

absl::StatusOr<CalibrateCommand> CalibrateFlags() {
  CalibrateCommand c;
  ASSIGN_OR_RETURN(const EngineOptions given, EngineOptionsFromFlags());
  c.heads = given.heads_path;
  if (c.heads.empty()) return absl::InvalidArgumentError("--heads is required");
  ASSIGN_OR_RETURN(c.engine, BaseModelFlags());
  c.distill = ReadDistillFlags();
  c.calibration = ReadCalibrationFlags();
  return c;
}

absl::StatusOr<MakeModelCommand> MakeModelFlags() {
  MakeModelCommand c;
  c.shape = absl::GetFlag(FLAGS_shape);
  c.from = absl::GetFlag(FLAGS_from);
  if (c.shape.empty() == c.from.empty()) return absl::InvalidArgumentError("give --shape NAME or --from MODEL");
  c.out = absl::GetFlag(FLAGS_out);
  if (c.out.empty()) return absl::InvalidArgumentError("--out DIR is required");
  c.dtype = absl::GetFlag(FLAGS_dtype);
  if (c.dtype != "f32" && c.dtype != "f16" && c.dtype != "bf16") {
    return absl::InvalidArgumentError(absl::StrFormat("--dtype must be f32, f16 or bf16, got %s", c.dtype));
  }
  c.seed = absl::GetFlag(FLAGS_seed);
  c.json = absl::GetFlag(FLAGS_json);
  return c;
}

}  // namespace medusa::tools
