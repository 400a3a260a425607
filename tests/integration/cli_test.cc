// The `medusa generate` command as a user runs it: JSON per the CLI contract,
// the same text as in-process generation, and clear errors with exit codes.

#include <array>
#include <cstdio>
#include <fstream>

#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/medusa/heads_file.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/random_heads.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using testing::BinaryPath;
using testing::kStoriesModel;
using testing::kStoriesTokenizer;

struct CliRun {
  int exit_code;
  std::string out;  // stdout and stderr
};

CliRun RunMedusa(const std::string& args, bool merge_stderr = true) {
  std::string command = BinaryPath("bin/medusa") + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string StoriesArgs() {
  return "generate --model " + kStoriesModel + " --tokenizer " + kStoriesTokenizer;
}

TEST(CliTest, GenerateJsonHasTheContractFieldsAndMatchesInProcessText) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  CliRun run = RunMedusa(StoriesArgs() + " --prompt 'Once upon a time' --max-tokens 30 --json", false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  nlohmann::json j = nlohmann::json::parse(run.out);
  for (const char* field : {"prompt_tokens", "new_tokens", "token_ids", "text", "steps",
                            "acceleration_rate", "decode_seconds", "tokens_per_second",
                            "mean_step_ms", "finish_reason"}) {
    EXPECT_TRUE(j.contains(field)) << field;
  }
  EXPECT_EQ(j["new_tokens"], 30);
  EXPECT_EQ(j["token_ids"].size(), 30u);
  EXPECT_EQ(j["steps"], 30);
  EXPECT_DOUBLE_EQ(j["acceleration_rate"].get<double>(), 1.0);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);

  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 16 << 20;
  auto engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationRequest request;
  request.prompt_ids = *EncodePrompt((*engine)->tokenizer(), "Once upon a time", false);
  request.max_tokens = 30;
  auto expected = Generate(**engine, request);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(j["prompt_tokens"], expected->prompt_tokens);
  EXPECT_EQ(j["token_ids"].get<std::vector<int32_t>>(), expected->token_ids);
  EXPECT_EQ(j["text"], expected->text);
}

TEST(CliTest, StreamsTextWithoutJson) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  CliRun run = RunMedusa(StoriesArgs() + " --prompt 'Once upon a time' --max-tokens 20", false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  EXPECT_GT(run.out.size(), 20u);
  EXPECT_EQ(run.out.find('{'), std::string::npos) << "plain text, not JSON";
}

TEST(CliTest, PromptsFileGivesOneObjectPerPrompt) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  std::string path = ::testing::TempDir() + "/prompts.jsonl";
  std::ofstream(path) << "{\"prompt\": \"Tom had a red ball\"}\n\n{\"prompt\": \"The sun was hot\"}\n";
  CliRun run = RunMedusa(StoriesArgs() + " --prompts " + path + " --max-tokens 5 --json", false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  std::istringstream lines(run.out);
  std::string line;
  int objects = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    EXPECT_EQ(nlohmann::json::parse(line)["new_tokens"], 5);
    ++objects;
  }
  EXPECT_EQ(objects, 2);
}

// Random heads written to a file: --heads decodes with Medusa through the same
// loop, reports the tree, and the greedy tokens equal --no-medusa's.
TEST(CliTest, MedusaFlagsDecodeLosslesslyAndReportSteps) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::string heads = ::testing::TempDir() + "/cli_heads.safetensors";
  ASSERT_TRUE(SaveMedusaHeads(heads, RandomMedusaHeads((*engine)->config(), 4, 1, false, 3, 0.05f),
                              nullptr)
                  .ok());
  // A prompt that repeats itself, so context lookup drafts have something to find.
  const std::string prompt =
      " --prompt 'Once upon a time, there was a little girl named Lily. Once upon a time' --max-tokens 40 --json";
  CliRun plain = RunMedusa(StoriesArgs() + " --heads " + heads + " --no-medusa" + prompt, false);
  ASSERT_EQ(plain.exit_code, 0) << plain.out;
  nlohmann::json p = nlohmann::json::parse(plain.out);
  EXPECT_EQ(p["mode"], "plain");
  EXPECT_EQ(p["steps"], 40);
  for (const std::string tree : {"", " --tree chain", " --tree mc_sim_7b_63", " --tree mc_sim_7b_63 --tree-budget 3",
                                 " --tree chain --lookup-tokens 4"}) {
    CliRun run = RunMedusa(StoriesArgs() + " --heads " + heads + tree + prompt, false);
    ASSERT_EQ(run.exit_code, 0) << tree << "\n" << run.out;
    nlohmann::json j = nlohmann::json::parse(run.out);
    EXPECT_EQ(j["mode"], "medusa") << tree;
    EXPECT_GT(j["tree_nodes"].get<int>(), 1) << tree;
    EXPECT_EQ(j["accepted_per_position"].size(), 4u) << tree;
    EXPECT_EQ(j["token_ids"], p["token_ids"]) << tree;
    EXPECT_EQ(j["text"], p["text"]) << tree;
    EXPECT_LE(j["steps"].get<int>(), 40) << tree;
    EXPECT_EQ(j["new_tokens"].get<int>(), j["steps"].get<int>() + j["accepted_tokens"].get<int>()) << tree;
    const bool lookup = tree.find("lookup") != std::string::npos;
    EXPECT_EQ(j["lookup_steps"].get<int>() > 0, lookup) << tree;
    EXPECT_LE(j["lookup_accepted_tokens"].get<int>(), j["accepted_tokens"].get<int>()) << tree;
  }
  // Dynamic trees keep nodes of an envelope tree: an auto tree is not one.
  CliRun with_auto = RunMedusa(StoriesArgs() + " --heads " + heads + " --tree auto --tree-budget 3" + prompt);
  EXPECT_NE(with_auto.exit_code, 0);
  EXPECT_NE(with_auto.out.find("--tree-budget keeps nodes of the tree --tree names"), std::string::npos)
      << with_auto.out;
}

TEST(CliTest, BadInputGivesAClearErrorAndExitCode) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  struct Case {
    std::string args;
    std::string expect;
  };
  std::string bad_jsonl = ::testing::TempDir() + "/bad.jsonl";
  std::ofstream(bad_jsonl) << "{\"prompt\": \"ok\"}\nnot json\n";
  for (const Case& c : std::vector<Case>{
           {"generate --prompt hi", "--model"},
           {StoriesArgs(), "--prompt"},
           {StoriesArgs() + " --prompt hi --max-tokens 0", "max_tokens"},
           {StoriesArgs() + " --prompt hi --temperature -1", "temperature"},
           {StoriesArgs() + " --prompt hi --top-p 2", "top_p"},
           {StoriesArgs() + " --prompts " + bad_jsonl, "bad.jsonl:2"},
           {"generate --model /nonexistent.gguf --prompt hi", "/nonexistent.gguf"},
           {StoriesArgs() + " --prompt hi --heads /nonexistent.safetensors", "/nonexistent.safetensors"},
           {StoriesArgs() + " --prompt hi --heads " +
                testing::SourcePath("tests/fixtures/medusa_heads_proj.safetensors"),
            "dim"},
           {StoriesArgs() + " --prompt hi --tree chain", "--heads"},
           {StoriesArgs() + " --prompt hi --tree-budget 4", "--tree-budget needs Medusa heads"},
           {StoriesArgs() + " --prompt hi --tree-budget -1", "--tree-budget must be >= 0"},
           {StoriesArgs() + " --prompt hi --dynamic-tree", "--dynamic-tree needs Medusa heads"},
           {StoriesArgs() + " --prompt hi --dynamic-tree --tree-budget 4 --heads " +
                testing::SourcePath("tests/fixtures/medusa_heads_proj.safetensors"),
            "--tree-budget fixes one"},
           {StoriesArgs() + " --prompt hi --lookup-tokens 2", "--lookup-tokens drafts where Medusa trees run"},
           {StoriesArgs() + " --prompt hi --lookup-tokens -1", "--lookup-tokens must be in [0, 64]"},
           {StoriesArgs() + " --prompt hi --lookup-tokens 65", "--lookup-tokens must be in [0, 64]"},
           {StoriesArgs() + " --prompt hi --hydra-topk 0", "--hydra-expand-width and --hydra-topk must be >= 1"},
           {"train --model x --out y --train-rows -1", "--train-rows must be >= 0"},
           {"train --model x --out y --answers-per-prompt 0", "--answers-per-prompt must be >= 1"},
           {"train --model x --out y --answers-per-prompt 2 --extra-answer-temperature 0",
            "--extra-answer-temperature must be > 0"},
           {"train --model x --out y --teacher-weight 1.5", "--teacher-weight must be in [0, 1], got 1.5"},
           {StoriesArgs() + " --prompt hi --typical-epsilon 2", "epsilon"},
           {"frobnicate", "unknown command"},
       }) {
    CliRun run = RunMedusa(c.args);
    EXPECT_NE(run.exit_code, 0) << c.args;
    EXPECT_NE(run.out.find(c.expect), std::string::npos) << c.args << "\n" << run.out;
  }
}

TEST(CliTest, DeviceFlagsFailClearlyWhereTheyCannotRun) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  struct Case {
    std::string args;
    std::string expect;
  };
  std::vector<Case> cases = {
      {StoriesArgs() + " --prompt hi --device cpu --weights q5_k", "--weights: weights 'q5_k' is not one of"},
      {StoriesArgs() + " --prompt hi --gpu-memory-fraction 1.5", "--gpu-memory-fraction"},
      {StoriesArgs() + " --prompt hi --device tpu", "unknown compute device"},
  };
  if (!kernels::CudaDeviceVisible()) cases.push_back({StoriesArgs() + " --prompt hi --device cuda", "--device cuda"});
  for (const Case& c : cases) {
    CliRun run = RunMedusa(c.args);
    EXPECT_NE(run.exit_code, 0) << c.args;
    EXPECT_NE(run.out.find(c.expect), std::string::npos) << c.args << "\n" << run.out;
  }
  // The default, auto, runs wherever the model fits: on the CPU here unless a GPU is visible.
  CliRun run = RunMedusa(StoriesArgs() + " --prompt hi --max-tokens 3 --json", false);
  EXPECT_EQ(run.exit_code, 0) << run.out;
}

}  // namespace
}  // namespace medusa
