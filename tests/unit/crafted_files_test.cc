// Crafted and corrupt files given to every reader the engine has: each gives a clear Status,
// never a crash, a hang or a huge allocation (issue 22). The files are made here, in the test:
// JSON nested 200,000 deep, GGUF tensors that share one block, a tokenizer.bin whose vocabulary
// cannot fit its file, /dev/zero, a FIFO and a directory given as files, a file truncated while
// it is mapped. Each case is a row of the bad-input matrix (docs), named by its test.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "engine/medusa/auto_tree_file.h"
#include "engine/medusa/calibration.h"
#include "engine/medusa/heads_file.h"
#include "engine/medusa/tree.h"
#include "engine/model/gguf.h"
#include "engine/model/loader.h"
#include "engine/model/mapped_file.h"
#include "engine/model/safetensors.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/train/self_distill.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/random_heads.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/model_test_util.h"

namespace medusa {
namespace {

namespace fs = std::filesystem;
using ::medusa::testing_util::Append;
using ::medusa::testing_util::AppendString;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string Deep(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// ------------------------------------------------------------------ special files

// A FIFO with no writer, a directory and /dev/zero, made fresh for a test.
class SpecialFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    fifo_ = dir_.file("fifo.json");
    ASSERT_EQ(::mkfifo(fifo_.c_str(), 0600), 0) << std::strerror(errno);
    directory_ = dir_.file("directory.json");
    fs::create_directory(directory_);
  }
  std::vector<std::pair<std::string, std::string>> Paths() const {
    return {{"/dev/zero", "character device"}, {fifo_, "FIFO"}, {directory_, "directory"}};
  }

  testing::TempDir dir_;
  std::string fifo_, directory_;
};

TEST_F(SpecialFiles, ReadFileBoundedRefusesEachWithoutBlocking) {
  for (const auto& [path, kind] : Paths()) {
    SCOPED_TRACE(path);
    absl::StatusOr<std::string> read = ReadFileBounded(path, 1 << 20, "test file");
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(read.status()), AllOf(HasSubstr(path), HasSubstr(kind), HasSubstr("not a regular file")));
  }
}

TEST_F(SpecialFiles, EveryFileReaderRefusesEach) {
  for (const auto& [path, kind] : Paths()) {
    SCOPED_TRACE(path);
    const std::vector<std::pair<std::string, absl::Status>> results = {
        {"llama2.c tokenizer", LoadLlama2cTokenizer(path, 512).status()},
        {"SentencePiece model", LoadSentencePieceModel(path).status()},
        {"tree", LoadTree(path, 4).status()},
        {"calibration", LoadCalibration(path).status()},
        {"auto tree", AutoTree::Load(path, 4).status()},
        {"model", LoadModel(path).status()},
        {"GGUF", gguf::File::Open(path).status()},
        {"safetensors", safetensors::File::Open(path).status()},
        {"JSON", ReadJsonFile(path, 1 << 20, "JSON").status()},
        {"seed prompts", LoadSeedPrompts(path).status()},
    };
    for (const auto& [reader, status] : results) {
      SCOPED_TRACE(reader);
      // A directory given as a model is a Hugging Face checkpoint without config.json.
      const bool hf_dir = reader == "model" && kind == "directory";
      EXPECT_EQ(status.code(), hf_dir ? absl::StatusCode::kNotFound : absl::StatusCode::kInvalidArgument) << status;
      EXPECT_THAT(Message(status), HasSubstr(path));
      if (!hf_dir) {
        EXPECT_THAT(Message(status), AllOf(HasSubstr(kind), HasSubstr("not a regular file")));
      }
    }
  }
}

// tokenizer.json (or tokenizer_config.json) inside a checkpoint directory, given as a FIFO.
TEST_F(SpecialFiles, HfTokenizerFilesThatAreFifosAreRefused) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}) {
    SCOPED_TRACE(name);
    testing::TempDir checkpoint;
    std::ofstream(checkpoint.file("tokenizer.json"))
        << R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})";
    std::ofstream(checkpoint.file("tokenizer_config.json")) << "{}";
    fs::remove(checkpoint.file(name));
    ASSERT_EQ(::mkfifo(checkpoint.file(name).c_str(), 0600), 0);
    absl::Status s = LoadHfTokenizer(checkpoint.file("")).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(Message(s), AllOf(HasSubstr(name), HasSubstr("is a FIFO")));
  }
}

TEST(ReadFileBoundedTest, SizeCapAndMissingFile) {
  testing::TempDir dir;
  const std::string path = dir.file("eleven.txt");
  WriteFile(path, "hello world");
  EXPECT_EQ(*ReadFileBounded(path, 11, "text"), "hello world");
  absl::StatusOr<std::string> over = ReadFileBounded(path, 10, "text");
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(over.status()), AllOf(HasSubstr("11 bytes"), HasSubstr("limit of 10")));
  EXPECT_EQ(ReadFileBounded(dir.file("absent"), 10, "text").status().code(), absl::StatusCode::kNotFound);
  // Files under /proc say they have 0 bytes: they are read to the end all the same, and capped.
  absl::StatusOr<std::string> status = ReadFileBounded("/proc/self/status", 1 << 20, "proc file");
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_THAT(*status, HasSubstr("Name:"));
  EXPECT_EQ(ReadFileBounded("/proc/self/status", 16, "proc file").status().code(), absl::StatusCode::kInvalidArgument);
}

// ------------------------------------------------------------------ JSON nesting

TEST(JsonDepthTest, SixtyFourLevelsPassAndSixtyFiveFail) {
  EXPECT_TRUE(CheckJsonDepth(Deep(64), "x").ok());
  absl::Status s = CheckJsonDepth(Deep(65), "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("x: JSON nests deeper than 64 levels"), HasSubstr("at byte 64")));
  // Objects count as arrays do; brackets inside strings (escaped quotes too) do not count.
  EXPECT_FALSE(CheckJsonDepth(std::string(65, '{'), "x").ok());
  EXPECT_TRUE(CheckJsonDepth("[\"" + std::string(100, '[') + "\\\"" + std::string(100, '{') + "\"]", "x").ok());
}

TEST(JsonDepthTest, ParseErrorsQuoteAFewHundredBytesAtMost) {
  absl::StatusOr<nlohmann::json> bad = ParseJson("\"" + std::string(100000, 'x'), "source");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(bad.status()), HasSubstr("source: not valid JSON"));
  EXPECT_LT(Message(bad.status()).size(), 400u);
  EXPECT_EQ(JsonSnippet(nlohmann::json(std::string(5000, 'y'))).size(), kMaxQuotedBytes + 3);
}

// Each JSON file the engine reads, nested 200,000 deep (400 KB): before the depth check,
// nlohmann's recursive copy or dump() overflowed the stack (exit 139).
TEST(JsonDepthTest, EveryJsonFileReaderRefusesDeepNesting) {
  testing::TempDir dir;
  const std::string deep = Deep(200000);
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = dir.file(name);
    fs::create_directories(fs::path(path).parent_path());
    WriteFile(path, text);
    return path;
  };
  const std::string tree = write("tree.json", deep);
  const std::string tree_object = write("tree_object.json", "{\"paths\": " + deep + "}");
  const std::string seeds = write("seeds.json", "[" + deep + "]");
  const std::string calibration = write("calibration.json", "{\"topk_accuracy\": " + deep + "}");
  const std::string auto_tree =
      write("heads.auto_tree.json", "{\"choice\": {\"1\": {\"nodes\": 1, \"paths\": " + deep + "}}}");
  write("hf/config.json", "{\"architectures\": " + deep + "}");
  write("hf_tok/tokenizer.json", "{\"model\": " + deep + "}");
  write("hf_tok2/tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  write("hf_tok2/tokenizer_config.json", "{\"chat_template\": " + deep + "}");
  const std::vector<std::pair<std::string, absl::Status>> results = {
      {"tree file", LoadTree(tree, 4).status()},
      {"tree file (object)", LoadTree(tree_object, 4).status()},
      {"tree text", ParseTreePaths(deep, "inline").status()},
      {"calibration", LoadCalibration(calibration).status()},
      {"auto tree", AutoTree::Load(auto_tree, 4).status()},
      {"auto tree merge", MergeAutoTreeMeasurement(deep, nlohmann::json::object(), nullptr).status()},
      {"HF config.json", LoadModel(dir.file("hf")).status()},
      {"tokenizer.json", LoadHfTokenizer(dir.file("hf_tok")).status()},
      {"tokenizer_config.json", LoadHfTokenizer(dir.file("hf_tok2")).status()},
      {"seed prompts", LoadSeedPrompts(seeds).status()},
  };
  for (const auto& [what, status] : results) {
    SCOPED_TRACE(what);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status.ToString().substr(0, 300);
    EXPECT_THAT(Message(status), HasSubstr("nests deeper than 64 levels"));
    EXPECT_LT(Message(status).size(), 600u);
  }
  EXPECT_FALSE(IsAutoTreeFile(auto_tree));
}

// A heads file whose __metadata__ nests 200,000 deep: the issue's confirmed crash.
TEST(JsonDepthTest, HeadsFileWithDeepMetadataIsRefused) {
  testing::TempDir dir;
  const std::string header = "{\"__metadata__\": {\"x\": " + Deep(200000) + "}}";
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  const std::string path = dir.file("heads.safetensors");
  WriteFile(path, bytes + header);
  ModelConfig config;
  config.dim = 8;
  config.vocab_size = 16;
  absl::StatusOr<MedusaHeadsWeights> heads = LoadMedusaHeads(path, config);
  EXPECT_EQ(heads.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(heads.status()), AllOf(HasSubstr(path), HasSubstr("nests deeper than 64 levels")));
}

// The published config.json beside a heads file, nested deep or a FIFO: refused, not a crash
// or a hang; absent, fine.
TEST(JsonDepthTest, HeadsConfigBesideTheHeadsIsChecked) {
  testing::TempDir dir;
  ModelConfig config;
  config.dim = 8;
  config.vocab_size = 16;
  const std::string heads_path = dir.file("heads.safetensors");
  ASSERT_TRUE(
      SaveMedusaHeads(heads_path, RandomMedusaHeads(config, 2, 1, false, 7, 0.1f), nullptr, safetensors::DType::kF32)
          .ok());
  ASSERT_TRUE(LoadMedusaHeads(heads_path, config).ok());
  WriteFile(dir.file("config.json"), "{\"medusa_num_heads\": " + Deep(100000) + "}");
  absl::Status deep = LoadMedusaHeads(heads_path, config).status();
  EXPECT_EQ(deep.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(deep), AllOf(HasSubstr("config.json"), HasSubstr("nests deeper than 64 levels")));
  fs::remove(dir.file("config.json"));
  ASSERT_EQ(::mkfifo(dir.file("config.json").c_str(), 0600), 0);
  absl::Status fifo = LoadMedusaHeads(heads_path, config).status();
  EXPECT_EQ(fifo.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(fifo), HasSubstr("is a FIFO"));
}

// ------------------------------------------------------------------ Hugging Face JSON of unexpected types

TEST(HfJsonTest, ValuesOfUnexpectedTypesAreInvalidArgument) {
  testing::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> tokenizers = {
      {"model type a number", R"({"model": {"type": 5, "vocab": {"a": 0}, "merges": []}})"},
      {"pre-tokenizer type a list",
       R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": [1]}})"},
      {"added token special a string", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},)"
                                       R"( "added_tokens": [{"id": 1, "content": "<s>", "special": "yes"}]})"},
      {"a vocabulary id of 16 million", R"({"model": {"type": "BPE", "vocab": {"a": 16000000}, "merges": []}})"},
      {"byte_fallback a string",
       R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "byte_fallback": "x"}})"},
  };
  for (const auto& [what, text] : tokenizers) {
    SCOPED_TRACE(what);
    const std::string sub = dir.file(std::to_string(std::hash<std::string>()(what)));
    fs::create_directories(sub);
    WriteFile(sub + "/tokenizer.json", text);
    absl::Status s = LoadHfTokenizer(sub).status();
    EXPECT_TRUE(s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kUnimplemented) << s;
  }
  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"hidden_size", 64},
                           {"intermediate_size", 128},
                           {"num_hidden_layers", 2},
                           {"num_attention_heads", 4},
                           {"vocab_size", 32},
                           {"max_position_embeddings", 64},
                           {"tie_word_embeddings", "yes"}};
  absl::Status s = ParseHuggingFaceConfig(config, "crafted").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(Message(s), HasSubstr("crafted"));
}

// ------------------------------------------------------------------ GGUF

// A llama GGUF written by hand, so that tensor offsets can lie: `offset_of(i, natural)` gives
// tensor i's offset (natural: where a writer would put it).
struct CraftedGguf {
  int layers = 2, dim = 64, hidden = 128, vocab = 32;
  uint32_t type = 2;  // Q4_0: 18 bytes per 32 values
  std::function<uint64_t(size_t, uint64_t)> offset_of = [](size_t, uint64_t natural) { return natural; };

  struct Info {
    std::string name;
    std::vector<int64_t> dims;
    uint32_t type;
    uint64_t bytes;
  };
  std::vector<Info> Tensors() const {
    auto bytes = [](const std::vector<int64_t>& dims, uint32_t t) {
      uint64_t n = 1;
      for (int64_t d : dims) n *= static_cast<uint64_t>(d);
      return t == 0 ? n * 4 : n / 32 * 18;
    };
    std::vector<Info> out;
    auto add = [&](const std::string& name, std::vector<int64_t> dims, uint32_t t) {
      out.push_back({name, dims, t, bytes(dims, t)});
    };
    add("token_embd.weight", {dim, vocab}, type);
    for (int i = 0; i < layers; ++i) {
      const std::string p = "blk." + std::to_string(i) + ".";
      add(p + "attn_norm.weight", {dim}, 0);
      for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output"}) add(p + n + ".weight", {dim, dim}, type);
      add(p + "ffn_norm.weight", {dim}, 0);
      add(p + "ffn_gate.weight", {dim, hidden}, type);
      add(p + "ffn_down.weight", {hidden, dim}, type);
      add(p + "ffn_up.weight", {dim, hidden}, type);
    }
    add("output_norm.weight", {dim}, 0);
    return out;
  }

  // The header; *data_bytes is where the data section must end for the offsets written.
  std::string Header(uint64_t* data_end) const {
    const std::vector<Info> tensors = Tensors();
    std::string out = "GGUF";
    Append<uint32_t>(out, 3);
    Append<uint64_t>(out, tensors.size());
    const std::vector<std::pair<std::string, uint32_t>> sizes = {
        {"llama.context_length", 64},
        {"llama.embedding_length", static_cast<uint32_t>(dim)},
        {"llama.block_count", static_cast<uint32_t>(layers)},
        {"llama.feed_forward_length", static_cast<uint32_t>(hidden)},
        {"llama.attention.head_count", 4},
        {"llama.vocab_size", static_cast<uint32_t>(vocab)}};
    Append<uint64_t>(out, sizes.size() + 2);
    AppendString(out, "general.architecture");
    Append<uint32_t>(out, 8);
    AppendString(out, "llama");
    AppendString(out, "llama.attention.layer_norm_rms_epsilon");
    Append<uint32_t>(out, 6);
    Append<float>(out, 1e-5f);
    for (const auto& [key, value] : sizes) {
      AppendString(out, key);
      Append<uint32_t>(out, 4);
      Append<uint32_t>(out, value);
    }
    uint64_t natural = 0;
    *data_end = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const Info& t = tensors[i];
      AppendString(out, t.name);
      Append<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
      for (int64_t d : t.dims) Append<int64_t>(out, d);
      Append<uint32_t>(out, t.type);
      const uint64_t offset = offset_of(i, natural);
      Append<uint64_t>(out, offset);
      *data_end = std::max(*data_end, offset + t.bytes);
      natural += (t.bytes + 31) / 32 * 32;
    }
    out.resize((out.size() + 31) / 32 * 32, '\0');
    return out;
  }

  std::string Bytes() const {
    uint64_t data_end = 0;
    std::string out = Header(&data_end);
    out.resize(out.size() + data_end, '\x11');
    return out;
  }
};

TEST(CraftedGgufTest, ItsNaturalLayoutLoads) {
  testing::TempDir dir;
  const std::string path = dir.file("natural.gguf");
  WriteFile(path, CraftedGguf{}.Bytes());
  absl::StatusOr<LoadedModel> model = LoadGguf(path);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->config.n_layers, 2);
}

// The issue's case: 1,024 layers whose tensors all point at one block. ggml's reader requires
// tensors in order and contiguous; so does ours, before anything is converted (the file opens
// as GGUF and fails there, so no layer is read).
TEST(CraftedGgufTest, LayersSharingOneBlockAreRefusedAtOpen) {
  testing::TempDir dir;
  CraftedGguf crafted;
  crafted.layers = 1024;
  crafted.dim = 256;
  crafted.hidden = 512;
  crafted.offset_of = [](size_t, uint64_t) { return uint64_t{0}; };
  const std::string path = dir.file("one_block.gguf");
  const std::string bytes = crafted.Bytes();
  EXPECT_LT(bytes.size(), 2u << 20) << "a small file";
  WriteFile(path, bytes);
  absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path), HasSubstr("tensor 'blk.0.attn_norm.weight' has data offset 0, expected 4608"),
                    HasSubstr("as ggml requires")));
  EXPECT_EQ(LoadModel(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CraftedGgufTest, OutOfOrderOrGappedOffsetsAreRefused) {
  testing::TempDir dir;
  for (const auto& [what, offset_of] : std::vector<std::pair<std::string, std::function<uint64_t(size_t, uint64_t)>>>{
           {"gap", [](size_t i, uint64_t natural) { return i == 3 ? natural + 32 : natural; }},
           {"swapped",
            [](size_t i, uint64_t natural) { return i == 1   ? natural + 1024
                                                    : i == 2 ? natural - 256
                                                             : natural; }},
       }) {
    SCOPED_TRACE(what);
    CraftedGguf crafted;
    crafted.offset_of = offset_of;
    const std::string path = dir.file(what + ".gguf");
    WriteFile(path, crafted.Bytes());
    absl::Status s = gguf::File::Open(path).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(Message(s), HasSubstr("must follow each other in order"));
  }
}

// A well-laid-out file whose weights as float32 would need about a terabyte: refused with
// ResourceExhausted before anything is allocated. The file is sparse (155 GB of holes).
TEST(CraftedGgufTest, WeightsTooLargeForMemoryAreRefusedBeforeAllocating) {
  testing::TempDir dir;
  CraftedGguf crafted;
  crafted.layers = 64;
  crafted.dim = 16384;
  crafted.hidden = 65536;
  uint64_t data_end = 0;
  const std::string header = crafted.Header(&data_end);
  const std::string path = dir.file("huge.gguf");
  WriteFile(path, header);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(header.size() + data_end)), 0) << std::strerror(errno);
  absl::StatusOr<LoadedModel> model = LoadGguf(path);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted) << model.status();
  EXPECT_THAT(Message(model.status()), AllOf(HasSubstr(path), HasSubstr("GiB of memory")));
}

// Strings from the file (an architecture, a metadata key) are quoted in part only.
TEST(CraftedGgufTest, ErrorsQuoteLongStringsInPart) {
  testing::TempDir dir;
  const std::string path = dir.file("long.gguf");
  WriteFile(path, testing_util::GgufBuilder().Str("general.architecture", std::string(100000, 'q')).Build());
  absl::Status arch = LoadGguf(path).status();
  EXPECT_EQ(arch.code(), absl::StatusCode::kUnimplemented) << arch.ToString().substr(0, 300);
  EXPECT_THAT(Message(arch), AllOf(HasSubstr("qqq..."), HasSubstr("is not supported")));
  EXPECT_LT(Message(arch).size(), 600u);
  WriteFile(path, testing_util::GgufBuilder().Raw(std::string(60000, 'k'), 99, "").Build());
  absl::Status key = LoadGguf(path).status();
  EXPECT_EQ(key.code(), absl::StatusCode::kInvalidArgument) << key.ToString().substr(0, 300);
  EXPECT_THAT(Message(key), AllOf(HasSubstr("kkk..."), HasSubstr("unknown value type 99")));
  EXPECT_LT(Message(key).size(), 600u);
}

TEST(MemoryCheckTest, AnAbsurdSizeIsResourceExhausted) {
  absl::Status s = CheckBytesFitInMemory(uint64_t{1} << 62, "thing");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Message(s), HasSubstr("thing: loading it needs"));
  EXPECT_TRUE(CheckBytesFitInMemory(1 << 20, "thing").ok());
}

// ------------------------------------------------------------------ llama2.c tokenizer.bin

TEST(Llama2cTokenizerTest, VocabularyLargerThanTheFileIsRefusedBeforeAllocating) {
  testing::TempDir dir;
  std::string bytes;
  Append<int32_t>(bytes, 16);  // max_token_length
  for (int i = 0; i < 10; ++i) {
    Append<float>(bytes, 0.0f);
    Append<int32_t>(bytes, 1);
    bytes += 'a';
  }
  const std::string path = dir.file("tok.bin");
  WriteFile(path, bytes);
  absl::Status s = LoadLlama2cTokenizer(path, 1 << 30).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr(path), HasSubstr("vocab_size 1073741824"), HasSubstr("the file has 90")));
}

// ------------------------------------------------------------------ many special tokens

// A GGUF vocabulary of 300,000 control tokens sharing a first byte: set up in linear time
// (each Add used to re-sort its bucket: about an hour for these, 70 s for 40,000), and they still
// match longest first.
TEST(ManySpecialTokensTest, LoadAndMatchLongestFirst) {
  testing::TempDir dir;
  constexpr int kSpecials = 300000;
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::string types;
  for (int32_t t : {2, 3, 3}) Append<int32_t>(types, t);
  for (int i = 0; i < kSpecials; ++i) {
    tokens.push_back("<c" + std::to_string(i) + ">");
    Append<int32_t>(types, 3);  // CONTROL
  }
  for (const char* piece : {"a", "\xE2\x96\x81"}) {
    tokens.push_back(piece);
    Append<int32_t>(types, 1);
  }
  std::string type_array;
  Append<uint32_t>(type_array, testing_util::kI32);
  Append<uint64_t>(type_array, tokens.size());
  testing_util::GgufBuilder builder;
  builder.Str("tokenizer.ggml.model", "llama")
      .StrArray("tokenizer.ggml.tokens", tokens)
      .Raw("tokenizer.ggml.token_type", testing_util::kArray, type_array + types);
  const std::string path = dir.file("many_specials.gguf");
  WriteFile(path, builder.Build());
  absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadGgufTokenizer(**file);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), kSpecials + 5);
  EXPECT_EQ((*tokenizer)->Encode("<c12345>", /*add_bos=*/false, /*parse_special=*/true),
            std::vector<int32_t>({3 + 12345}))
      << "the longest match, not <c1> or <c12>";
}

// ------------------------------------------------------------------ truncated while mapped

// Each reader of a mapped file, with the file truncated after it was opened: DataLoss, never
// SIGBUS. Run in a child (EXPECT_EXIT), so that a regression kills only the child; the child
// re-runs the test from the start ("threadsafe"), as forking beside OpenMP's threads may hang.
class TruncatedWhileMappedTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(TruncatedWhileMappedTest, MappedFileReadsZerosAndReportsDataLoss) {
  testing::TempDir dir;
  const std::string path = dir.file("shrinking.bin");
  WriteFile(path, std::string(1 << 20, '\x7f'));
  EXPECT_EXIT(
      {
        absl::StatusOr<std::unique_ptr<MappedFile>> map = MappedFile::Open(path);
        if (!map.ok() || !(*map)->CheckIntact().ok()) std::_Exit(2);
        if (::truncate(path.c_str(), 4096) != 0) std::_Exit(3);
        uint32_t sum = 0;
        for (uint64_t i = 0; i < (*map)->size(); i += 4096) sum += (*map)->data()[i];  // faults past 4096
        volatile uint32_t sink = sum;                                                  // keeps the reads
        (void)sink;
        const uint8_t last = (*map)->data()[(*map)->size() - 1];
        const absl::Status s = (*map)->CheckIntact();
        std::_Exit(s.code() == absl::StatusCode::kDataLoss && last == 0 && (*map)->data()[0] == 0x7f ? 0 : 4);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(TruncatedWhileMappedTest, SafetensorsTensorReadGivesDataLoss) {
  testing::TempDir dir;
  const std::string path = dir.file("weights.safetensors");
  const std::vector<float> values(1 << 18, 1.5f);
  ASSERT_TRUE(safetensors::WriteFile(path, {{"w", {1 << 18}, values, safetensors::DType::kF32}}, nullptr).ok());
  EXPECT_EXIT(
      {
        absl::StatusOr<std::unique_ptr<safetensors::File>> file = safetensors::File::Open(path);
        if (!file.ok()) std::_Exit(2);
        if (::truncate(path.c_str(), 8192) != 0) std::_Exit(3);
        const absl::Status s = (*file)->ReadTensor("w").status();
        std::_Exit(s.code() == absl::StatusCode::kDataLoss ? 0 : 4);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(TruncatedWhileMappedTest, GgufTensorReadGivesDataLoss) {
  testing::TempDir dir;
  CraftedGguf crafted;
  crafted.dim = 256;
  crafted.hidden = 1024;
  const std::string path = dir.file("model.gguf");
  const std::string bytes = crafted.Bytes();
  WriteFile(path, bytes);
  EXPECT_EXIT(
      {
        absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path);
        if (!file.ok()) std::_Exit(2);
        if (::truncate(path.c_str(), 16384) != 0) std::_Exit(3);
        std::vector<float> out;
        const absl::Status s = (*file)->ReadTensor(*(*file)->FindTensor("blk.1.ffn_up.weight"), &out);
        std::_Exit(s.code() == absl::StatusCode::kDataLoss ? 0 : 4);
      },
      ::testing::ExitedWithCode(0), "");
}

// Faults outside any map still kill the process with SIGBUS, as without the guard.
TEST_F(TruncatedWhileMappedTest, OtherSigbusStillKills) {
  MappedFile::Open("/proc/self/exe").IgnoreError();  // installs the guard's handler
  // The guard forwards a SIGBUS it does not own to the handler before it: the default kills the
  // process by the signal; a sanitizer's handler (installed first) reports it and exits 1.
  EXPECT_EXIT(
      raise(SIGBUS),
      [](int status) {
        return (WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
      },
      "");
}

}  // namespace
}  // namespace medusa
