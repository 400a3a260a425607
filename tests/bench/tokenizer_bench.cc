// Encoding speed of the project's tokenizers on about 100 KB of mixed text (the tokenizer
// fixtures' strings, repeated), and on one 100 KB "word" (the merge loops must not be
// quadratic): medians of 5 runs.
//
//   tokenizer_bench   (from the repository root, after scripts/setup.sh)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

using medusa::Tokenizer;

std::string SourcePath(const std::string& relative) { return std::string(MEDUSA_SOURCE_DIR) + "/" + relative; }

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "tokenizer_bench: %s\n", message.c_str());
  std::exit(1);
}

std::string LongText() {
  std::ifstream in(SourcePath("tests/fixtures/tokenizer_fixtures.json"));
  const nlohmann::json fixtures = nlohmann::json::parse(in, nullptr, false);
  if (!fixtures.is_object()) Die("cannot read tests/fixtures/tokenizer_fixtures.json");
  const std::vector<std::string> strings = fixtures.value("strings", std::vector<std::string>{});
  std::string text;
  for (size_t i = 0; !strings.empty() && text.size() < 100 * 1024; ++i) {
    text += strings[i % strings.size()];
    text += i % 7 == 0 ? "\n" : " ";
  }
  return text;
}

std::unique_ptr<Tokenizer> Must(absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer) {
  if (!tokenizer.ok()) Die(std::string(tokenizer.status().message()));
  return *std::move(tokenizer);
}

void MeasureEncode(const char* name, const Tokenizer& tok, const std::string& text) {
  size_t tokens = tok.Encode(text, false).size();  // warm-up
  const int rounds = 5;
  std::vector<double> seconds;
  for (int r = 0; r < rounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    tokens = tok.Encode(text, false).size();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[rounds / 2];
  std::printf("%-12s %zu bytes -> %zu tokens in %.2f ms (median of %d): %.2f M tokens/s, %.1f MB/s\n", name,
              text.size(), tokens, median * 1e3, rounds, tokens / median / 1e6, text.size() / median / 1e6);
}

}  // namespace

int main() {
  const std::string text = LongText();
  std::unique_ptr<Tokenizer> llama2 =
      Must(medusa::LoadSentencePieceModel(SourcePath("models/llama2-tokenizer/tokenizer.model")));
  auto gguf = medusa::gguf::File::Open(SourcePath("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
  if (!gguf.ok()) Die(std::string(gguf.status().message()));
  std::unique_ptr<Tokenizer> smollm2 = Must(medusa::LoadGgufTokenizer(**gguf));
  MeasureEncode("llama2", *llama2, text);
  MeasureEncode("smollm2", *smollm2, text);
  const std::string word(100 * 1024, 'a');
  MeasureEncode("llama2-aaa", *llama2, word);
  MeasureEncode("smollm2-aaa", *smollm2, word);
  return 0;
}
