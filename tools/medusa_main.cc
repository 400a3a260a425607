// The `medusa` tool: medusa <command> [flags], for generate, client, bench, health, train,
// calibrate, tree and make-model (kUsage below). main parses the command line and reads the
// command's flags once (tools/flags.h); the command gets them as plain values.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"
#include "tools/commands.h"
#include "tools/fail.h"
#include "tools/flags.h"

namespace {

constexpr char kUsage[] =
    "medusa <command> [flags]\n"
    "Commands:\n"
    "  generate   generate text in-process: --model PATH (--prompt TEXT | --prompts FILE.jsonl)\n"
    "             [--tokenizer PATH] [--chat] [--max-tokens N] [--temperature T] [--top-p P]\n"
    "             [--heads PATH] [--tree NAME|FILE|auto] [--tree-budget N] [--no-medusa]\n"
    "             [--acceptance typical|rejection]\n"
    "             [--typical-epsilon E] [--typical-delta D] [--top-k K] [--seed S] [--stop A,B] [--device cpu|cuda]\n"
    "             [--threads N] [--json]\n"
    "  train      train Medusa heads by self-distillation: --model PATH --out HEADS.safetensors\n"
    "             [--seed-prompts FILE] [--num-prompts N] [--gen-tokens N] [--answers-per-prompt N] [--num-heads K]\n"
    "             [--head-type medusa|hydra] [--num-layers L] [--share-lm-head] [--epochs E] [--lr LR] [--seed S]\n"
    "             (writes the heads, HEADS.json with the settings, HEADS.calibration.json)\n"
    "  calibrate  per-head top-1..10 accuracy on held-out prompts: --model PATH --heads PATH\n"
    "             [--calibration-prompts FILE] [--calibration-count N] [--calibration-out FILE]\n"
    "  client     generate on a medusa-server over gRPC: --addr HOST:PORT and the flags of generate\n"
    "             (prints the same JSON with --json, else streams the text)\n"
    "  bench      load a medusa-server: --addr HOST:PORT --prompts FILE.jsonl --concurrency N\n"
    "             [--requests M] [--no-medusa] [--max-tokens N] [--ignore-eos] [--json]\n"
    "             (client, bench, health: [--tls-ca-file PEM [--tls-cert-file PEM --tls-key-file PEM]]\n"
    "             [--auth-token-file FILE] for a server with TLS or a bearer token; client, bench, health:\n"
    "             --lb-policy round_robin spreads calls over every address --addr resolves to, e.g.\n"
    "             dns:///NAME:PORT)\n"
    "  health     ask a medusa-server's gRPC health service: --addr HOST:PORT [--service NAME]\n"
    "             [--timeout-seconds S] and the TLS and token flags of client (exit 0 when SERVING, else 1\n"
    "             with the reason; --service medusa.v1.Generator: ready to generate, medusa.v1.Liveness:\n"
    "             the process is up, loading and draining included)\n"
    "  tree       Medusa trees from the heads' calibration: --calibration FILE.json --nodes N [--out FILE]\n"
    "             (the greedy tree), or --auto --model PATH --heads PATH --calibration FILE.json\n"
    "             [--batch-sizes 1,2,4,8,16] [--tree-sizes 1,2,4,8,16,32,64] [--out FILE] (time trees on\n"
    "             this machine and pick one per batch size, for --tree auto)\n"
    "  make-model write a random-weight Hugging Face checkpoint of a known shape (--shape NAME), or a model\n"
    "             in Hugging Face's layout (--from MODEL): --out DIR\n"
    "             [--dtype f16|bf16|f32] [--seed S] [--json] (shapes: llama-2-7b, llama-3-8b, mistral-7b,\n"
    "             smollm2-135m, tiny)\n"
    "Run `medusa <command> --help` for every flag.";

// Runs the command with its flags, or fails with what is wrong with them.
template <typename Command>
int Dispatch(const absl::StatusOr<Command>& flags, int (*run)(const Command&)) {
  if (!flags.ok()) return medusa::tools::Fail(flags.status());
  return run(*flags);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::puts(kUsage);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  // Parse the flags after the command; dashes in flag names become underscores.
  std::vector<std::string> args = medusa::tools::NormalizeFlagNames(argc - 1, argv + 1);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  std::vector<char*> positional = absl::ParseCommandLine(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  if (positional.size() > 1) {
    std::fprintf(stderr, "medusa %s: unexpected argument '%s'\n", command.c_str(), positional[1]);
    return 2;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("medusa"));
  spdlog::set_level(spdlog::level::from_str(medusa::tools::LogLevelFlag()));

  namespace tools = medusa::tools;
  if (command == "generate") return Dispatch(tools::GenerateFlags(), tools::RunGenerate);
  if (command == "tree") return Dispatch(tools::TreeFlags(), tools::RunTree);
  if (command == "train") return Dispatch(tools::TrainFlags(), tools::RunTrain);
  if (command == "calibrate") return Dispatch(tools::CalibrateFlags(), tools::RunCalibrate);
  if (command == "client") return Dispatch(tools::ClientFlags(), tools::RunClient);
  if (command == "bench") return Dispatch(tools::BenchFlags(), tools::RunBench);
  if (command == "health") return Dispatch(tools::HealthFlags(), tools::RunHealth);
  if (command == "make-model") return Dispatch(tools::MakeModelFlags(), tools::RunMakeModel);
  std::fprintf(stderr, "medusa: unknown command '%s'\n%s\n", command.c_str(), kUsage);
  return 2;
}
