// `medusa tree` and `--tree auto` as a user runs them, on stories260K with random heads
// and a made-up calibration: the measured file's structure, the engine resolving it
// (a tree or plain decoding at batch size 1), greedy output equal to plain decoding,
// and clear errors.

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/engine.h"
#include "engine/generate/generator.h"
#include "engine/medusa/auto_tree_file.h"
#include "engine/medusa/heads_file.h"
#include "engine/medusa/tree_builder.h"
#include "engine/tokenizer/prompt_encoding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/random_heads.h"
#include "tests/support/test_models.h"

namespace medusa {
namespace {

using ::testing::HasSubstr;
using testing::BinaryPath;
using testing::kStoriesModel;
using testing::kStoriesTokenizer;
using Paths = std::vector<std::vector<int>>;

struct CliRun {
  int exit_code;
  std::string out;
};

CliRun RunMedusa(const std::string& args, bool merge_stderr = true) {
  const std::string command =
      BinaryPath("bin/medusa") + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string ModelArgs() { return "--model " + kStoriesModel + " --tokenizer " + kStoriesTokenizer; }

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/tree_auto_" + name; }

// Writes random 4-head stories260K heads under `name` and returns the path.
std::string WriteHeads(const std::string& name) {
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  const std::string path = TempPath(name);
  std::filesystem::remove(AutoTreePathFor(path));
  std::filesystem::remove(CalibrationPathFor(path));
  EXPECT_TRUE(SaveMedusaHeads(path, RandomMedusaHeads((*engine)->config(), 4, 1, false, 21, 0.05f), nullptr).ok());
  return path;
}

std::string WriteCalibration(const std::string& heads) {
  const std::string path = TempPath("calibration.json");
  std::ofstream(path) << nlohmann::json{
      {"heads", heads},
      {"topk_accuracy",
       {{0.6, 0.7, 0.75, 0.78, 0.8, 0.82, 0.83, 0.84, 0.85, 0.86},
        {0.4, 0.5, 0.56, 0.6, 0.63, 0.65, 0.67, 0.68, 0.69, 0.7},
        {0.3, 0.4, 0.45, 0.48, 0.5, 0.52, 0.53, 0.54, 0.55, 0.56},
        {0.2, 0.3, 0.34, 0.37, 0.4, 0.42, 0.43, 0.44, 0.45, 0.46}}}}.dump();
  return path;
}

// stories260K with `heads` and --tree auto.
EngineOptions AutoTreeEngineOptions(const std::string& heads) {
  EngineOptions options;
  options.model_path = kStoriesModel;
  options.tokenizer_path = kStoriesTokenizer;
  options.kv_cache_bytes = 8 << 20;
  options.heads_path = heads;
  options.tree = "auto";
  return options;
}

nlohmann::json GenerateJson(const std::string& extra) {
  CliRun run = RunMedusa("generate " + ModelArgs() + " --prompt 'Once upon a time' --max-tokens 40 --json " + extra,
                         false);
  EXPECT_EQ(run.exit_code, 0) << extra << "\n" << run.out;
  nlohmann::json j = nlohmann::json::parse(run.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << run.out;
  return j;
}

TEST(MedusaTreeAutoTest, MeasuresTreesAndGenerateUsesTheBatchOneChoiceLosslessly) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = WriteHeads("measured.safetensors");
  const std::string calibration = WriteCalibration(heads);
  CliRun run = RunMedusa("tree --auto " + ModelArgs() + " --heads " + heads + " --calibration " + calibration +
                         " --batch-sizes 1,2 --tree-sizes 4,8 --repeats 2 --context-tokens 64 --threads 1");
  ASSERT_EQ(run.exit_code, 0) << run.out;
  const std::string out_path = AutoTreePathFor(heads);
  EXPECT_THAT(run.out, HasSubstr("wrote " + out_path));
  EXPECT_THAT(run.out, HasSubstr("(measurements of 1 machine)"));
  std::ifstream in(out_path);
  ASSERT_TRUE(in) << out_path << " was not written";
  const nlohmann::json file = nlohmann::json::parse(in);
  ASSERT_EQ(file["machines"].size(), 1u) << file.dump();
  const nlohmann::json& report = file["machines"][0];

  EXPECT_EQ(report["heads"], heads);
  EXPECT_EQ(report["calibration"], calibration);
  EXPECT_EQ(report["machine"]["backend"], "cpu");
  EXPECT_EQ(report["machine"]["threads"], 1);
  const nlohmann::json& m = report["measurements"];
  ASSERT_EQ(m.size(), 6u) << m.dump();
  for (size_t i = 0; i < m.size(); ++i) {
    for (const char* field : {"batch_size", "nodes", "step_ms", "overhead", "expected_acceleration", "expected_speedup"}) {
      EXPECT_TRUE(m[i].contains(field)) << field;
    }
    EXPECT_EQ(m[i]["batch_size"], i < 3 ? 1 : 2);
    const int sizes[] = {0, 4, 8};
    EXPECT_EQ(m[i]["nodes"], sizes[i % 3]);
    EXPECT_GT(m[i]["step_ms"].get<double>(), 0.0);
    if (i % 3 == 0) {
      EXPECT_DOUBLE_EQ(m[i]["overhead"].get<double>(), 1.0);
    }
  }
  // Hand-computed: greedy 4 nodes = [0] .6, [0,0] .24, [1] .1, [0,0,0] .072.
  EXPECT_NEAR(m[1]["expected_acceleration"].get<double>(), 2.012, 1e-9);
  for (const char* b : {"1", "2"}) {
    const nlohmann::json& c = report["choice"][b];
    const int nodes = c["nodes"].get<int>();
    EXPECT_TRUE(nodes == 0 || nodes == 4 || nodes == 8) << c.dump();
    EXPECT_EQ(c["paths"].size(), static_cast<size_t>(nodes));
  }

  const nlohmann::json plain = GenerateJson("--heads " + heads + " --no-medusa");
  // Measured with 1 thread: the same thread count finds it this machine's.
  const nlohmann::json automatic = GenerateJson("--heads " + heads + " --tree auto --threads 1");
  EXPECT_EQ(automatic["token_ids"], plain["token_ids"]);
  EXPECT_EQ(automatic["text"], plain["text"]);
  EXPECT_EQ(automatic["tree_nodes"], report["choice"]["1"]["nodes"].get<int>() + 1);
}

// One file serves several machines: measuring here keeps another machine's measurement
// (made for the same heads), replaces this machine's own, and the engine takes this
// machine's without measuring again.
TEST(MedusaTreeAutoTest, MeasuringHereKeepsOtherMachinesMeasurements) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = WriteHeads("two_machines.safetensors");
  const std::string calibration = WriteCalibration(heads);
  const nlohmann::json accuracy = nlohmann::json::parse(std::ifstream(calibration))["topk_accuracy"];
  std::ofstream(AutoTreePathFor(heads)) << nlohmann::json{
      {"machine", {{"id", "cpu avx2, 2 threads, another machine"}}},
      {"topk_accuracy", accuracy},
      {"choice", {{"1", {{"nodes", 3}, {"paths", {{0}, {1}, {2}}}}}}}}.dump();
  const std::string measure = "tree --auto " + ModelArgs() + " --heads " + heads + " --calibration " +
                              calibration + " --batch-sizes 1 --tree-sizes 2 --repeats 1 --context-tokens 32 "
                              "--threads 1";
  for (int run_number = 0; run_number < 2; ++run_number) {  // the second replaces the first's
    CliRun run = RunMedusa(measure);
    ASSERT_EQ(run.exit_code, 0) << run.out;
    EXPECT_THAT(run.out, HasSubstr("(measurements of 2 machines)")) << run.out;
  }
  const nlohmann::json file = nlohmann::json::parse(std::ifstream(AutoTreePathFor(heads)));
  ASSERT_EQ(file["machines"].size(), 2u) << file.dump();
  EXPECT_EQ(file["machines"][0]["machine"]["id"], "cpu avx2, 2 threads, another machine");
  EXPECT_EQ(file["machines"][0]["choice"]["1"]["nodes"], 3);
  const nlohmann::json& here = file["machines"][1];

  EngineOptions options = AutoTreeEngineOptions(heads);
  options.backend.threads = 1;
  options.auto_tree_batch_sizes = {1, 7};  // a measurement at start-up would have batch size 7
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ(here["machine"]["id"], (*engine)->backend().MachineId());
  EXPECT_EQ((*engine)->auto_tree()->machine_id(), (*engine)->backend().MachineId());
  EXPECT_EQ((*engine)->auto_tree()->batch_sizes(), (std::vector<int>{1})) << "read, not measured again";
  EXPECT_EQ((*engine)->medusa_tree()->num_nodes(), here["choice"]["1"]["nodes"].get<int>() + 1);

  // Heads retrained (other accuracies): the other machine's choice is stale and goes.
  std::ofstream(calibration) << nlohmann::json{{"heads", heads}, {"topk_accuracy", {{0.5, 0.6}, {0.3, 0.4}}}}.dump();
  CliRun retrained = RunMedusa(measure);
  ASSERT_EQ(retrained.exit_code, 0) << retrained.out;
  EXPECT_THAT(retrained.out, HasSubstr("dropped the measurement of 'cpu avx2, 2 threads, another machine'"));
  EXPECT_THAT(retrained.out, HasSubstr("(measurements of 1 machine)"));
}

// Hand-written auto files: the engine installs batch size 1's choice (plain decoding
// when that is what won) and keeps every batch size's for a scheduler.
TEST(MedusaTreeAutoTest, EngineResolvesAutoIncludingAPlainChoice) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = WriteHeads("handwritten.safetensors");
  EngineOptions options = AutoTreeEngineOptions(heads);

  std::ofstream(AutoTreePathFor(heads)) << R"({"choice": {
      "1": {"nodes": 0, "paths": []},
      "4": {"nodes": 3, "paths": [[0], [1], [0, 0]]}}})";
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_NE((*engine)->medusa_tree(), nullptr);
  EXPECT_EQ((*engine)->medusa_tree()->num_nodes(), 1) << "plain decoding won at batch size 1";
  ASSERT_NE((*engine)->auto_tree(), nullptr);
  EXPECT_EQ((*engine)->auto_tree()->TreeForBatch(3).paths(), (Paths{{0}, {1}, {0, 0}}));

  GenerationRequest request;
  request.prompt_ids = *EncodePrompt((*engine)->tokenizer(), "Once upon a time", false);
  request.max_tokens = 40;
  request.ignore_eos = true;
  absl::StatusOr<GenerationResult> with_auto = Generate(**engine, request);
  ASSERT_TRUE(with_auto.ok()) << with_auto.status();
  request.use_medusa = false;
  absl::StatusOr<GenerationResult> plain = Generate(**engine, request);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(with_auto->token_ids, plain->token_ids);
  EXPECT_EQ(with_auto->steps, 40) << "one token per step";

  const nlohmann::json cli_plain = GenerateJson("--heads " + heads + " --tree auto");
  EXPECT_EQ(cli_plain["tree_nodes"], 1);
  EXPECT_EQ(cli_plain["token_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(plain->token_ids.begin(), plain->token_ids.end()));

  std::ofstream(AutoTreePathFor(heads)) << R"({"choice": {"1": {"nodes": 2, "paths": [[0], [0, 0]]}}})";
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->medusa_tree()->paths(), (Paths{{0}, {0, 0}}));
  request.use_medusa = true;
  absl::StatusOr<GenerationResult> chain = Generate(**engine, request);
  ASSERT_TRUE(chain.ok()) << chain.status();
  EXPECT_EQ(chain->token_ids, plain->token_ids);
}

// Without this machine's measurement, "auto" measures the trees at start-up from the
// calibration beside the heads; a file measured elsewhere is measured again, one
// measured here (or hand-written, without a machine) is used as it is.
TEST(MedusaTreeAutoTest, AutoMeasuresAtStartUpUnlessThisMachineMeasured) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = WriteHeads("startup.safetensors");
  std::filesystem::copy_file(WriteCalibration(heads), CalibrationPathFor(heads),
                             std::filesystem::copy_options::overwrite_existing);
  EngineOptions options = AutoTreeEngineOptions(heads);
  options.auto_tree_batch_sizes = {1, 3};
  options.auto_tree_sizes = {2, 4};
  options.backend.threads = 1;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_NE((*engine)->auto_tree(), nullptr);
  EXPECT_EQ((*engine)->auto_tree()->batch_sizes(), (std::vector<int>{1, 3}));
  EXPECT_EQ((*engine)->auto_tree()->machine_id(), (*engine)->backend().MachineId());
  for (int batch : {1, 3}) {
    const int nodes = (*engine)->auto_tree()->TreeForBatch(batch).num_nodes();
    EXPECT_TRUE(nodes == 1 || nodes == 3 || nodes == 5) << "batch " << batch << ": " << nodes;
  }
  GenerationRequest request;
  request.prompt_ids = *EncodePrompt((*engine)->tokenizer(), "Once upon a time", false);
  request.max_tokens = 30;
  absl::StatusOr<GenerationResult> automatic = Generate(**engine, request);
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  request.use_medusa = false;
  absl::StatusOr<GenerationResult> plain = Generate(**engine, request);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(automatic->token_ids, plain->token_ids);

  // Measured on another machine: measured again here.
  const std::string elsewhere = R"({"machine": {"id": "some other machine"},
      "choice": {"1": {"nodes": 3, "paths": [[0], [1], [2]]}}})";
  std::ofstream(AutoTreePathFor(heads)) << elsewhere;
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->auto_tree()->machine_id(), (*engine)->backend().MachineId());
  EXPECT_EQ((*engine)->auto_tree()->batch_sizes(), (std::vector<int>{1, 3}));
  // Measured here: used as it is.
  std::ofstream(AutoTreePathFor(heads)) << nlohmann::json{
      {"machine", {{"id", (*engine)->backend().MachineId()}}},
      {"choice", {{"1", {{"nodes", 3}, {"paths", {{0}, {1}, {2}}}}}}}}.dump();
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->medusa_tree()->paths(), (Paths{{0}, {1}, {2}}));
  EXPECT_EQ((*engine)->auto_tree()->batch_sizes(), (std::vector<int>{1}));
  // Several machines' measurements, this one's among them: this machine's, as it is.
  std::ofstream(AutoTreePathFor(heads)) << nlohmann::json{
      {"machines",
       {nlohmann::json::parse(elsewhere),
        {{"machine", {{"id", (*engine)->backend().MachineId()}}},
         {"choice", {{"1", {{"nodes", 2}, {"paths", {{0}, {0, 0}}}}}}}}}}}.dump();
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->medusa_tree()->paths(), (Paths{{0}, {0, 0}}));
  EXPECT_EQ((*engine)->auto_tree()->batch_sizes(), (std::vector<int>{1}));
  // An auto-tree file given by path is used as it is, wherever it was measured.
  const std::string given = TempPath("given.auto_tree.json");
  std::ofstream(given) << elsewhere;
  options.tree = given;
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->medusa_tree()->paths(), (Paths{{0}, {1}, {2}}));
  ASSERT_NE((*engine)->auto_tree(), nullptr);

  // No tree named: "auto" while the calibration is there, the reference's default without.
  options.tree = "";
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->tree_source(), "auto");
  std::filesystem::remove(CalibrationPathFor(heads));
  std::filesystem::remove(AutoTreePathFor(heads));
  engine = Engine::Create(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->tree_source(), "mc_sim_7b_63");
  EXPECT_EQ((*engine)->auto_tree(), nullptr);
}

TEST(MedusaTreeAutoTest, ErrorsAreClear) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string heads = WriteHeads("unmeasured.safetensors");
  const std::string calibration = WriteCalibration(heads);
  const std::string bad_calibration = TempPath("bad_calibration.json");
  std::ofstream(bad_calibration) << R"({"topk_accuracy": [[0.5, 0.4]]})";
  struct Case {
    std::string args, expect;
    int exit_code;
  };
  for (const Case& c : std::vector<Case>{
           {"generate " + ModelArgs() + " --prompt hi --heads " + heads + " --tree auto", "medusa tree --auto", 1},
           {"generate " + ModelArgs() + " --prompt hi --heads " + heads + " --tree auto",
            AutoTreePathFor(heads), 1},
           {"generate " + ModelArgs() + " --prompt hi --heads " + heads + " --tree auto",
            CalibrationPathFor(heads), 1},
           {"tree --nodes 4", "--calibration", 2},
           {"tree --calibration /nonexistent/c.json --nodes 4", "/nonexistent/c.json", 1},
           {"tree --calibration " + bad_calibration + " --nodes 4", "decreases", 2},
           {"tree --calibration " + calibration, "--nodes", 2},
           {"tree --calibration " + calibration + " --nodes 99999", "not possible", 2},
           {"tree --auto --calibration " + calibration + " " + ModelArgs(), "--heads", 2},
           {"tree --auto --calibration " + calibration + " " + ModelArgs() + " --heads " + heads +
                " --batch-sizes 1,x",
            "--batch-sizes: 'x'", 2},
       }) {
    CliRun run = RunMedusa(c.args);
    EXPECT_EQ(run.exit_code, c.exit_code) << c.args << "\n" << run.out;
    EXPECT_THAT(run.out, HasSubstr(c.expect)) << c.args;
  }
}

TEST(MedusaTreeAutoTest, GreedyTreeGoesToStdoutOrFile) {
  const std::string calibration = WriteCalibration("h.safetensors");
  CliRun run = RunMedusa("tree --calibration " + calibration + " --nodes 4", false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  const nlohmann::json j = nlohmann::json::parse(run.out);
  EXPECT_EQ(j["nodes"], 4);
  EXPECT_EQ(j["paths"].get<Paths>(), (Paths{{0}, {1}, {0, 0}, {0, 0, 0}}));
  EXPECT_NEAR(j["expected_acceleration"].get<double>(), 2.012, 1e-9);

  const std::string out = TempPath("greedy.json");
  std::filesystem::remove(out);
  run = RunMedusa("tree --calibration " + calibration + " --nodes 4 --out " + out, false);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  EXPECT_TRUE(run.out.empty()) << run.out;
  absl::StatusOr<MedusaTree> tree = LoadTree(out, 4);
  ASSERT_TRUE(tree.ok()) << tree.status();
  EXPECT_EQ(tree->paths(), j["paths"].get<Paths>());
}

}  // namespace
}  // namespace medusa
