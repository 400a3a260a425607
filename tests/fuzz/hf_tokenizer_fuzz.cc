// Hugging Face tokenizer.json files, through the loader itself (LoadHfTokenizer reads a
// directory: the files are written into a scratch directory in memory, ScratchDir). The
// first byte's bit 0 adds a tokenizer_config.json (SmolLM2's special tokens and a chat
// template) beside it; the rest of the input is tokenizer.json. A tokenizer that loads is
// then used (ExerciseTokenizer).

#include <filesystem>
#include <string>

#include "engine/tokenizer/tokenizer.h"
#include "fuzz_support.h"

namespace {

constexpr char kConfig[] = R"({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "add_bos_token": false,
  "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  medusa::fuzz::QuietLogs();
  medusa::fuzz::Reader reader(data, size);
  const uint8_t flags = reader.Byte();
  const std::string& dir = medusa::fuzz::ScratchDir();
  medusa::fuzz::Write(dir + "/tokenizer.json", reader.Rest());
  if (flags & 1) {
    medusa::fuzz::Write(dir + "/tokenizer_config.json", kConfig);
  } else {
    std::filesystem::remove(dir + "/tokenizer_config.json");
  }
  auto tokenizer = medusa::LoadHfTokenizer(dir);
  if (!medusa::fuzz::Accepted(tokenizer.status(), "LoadHfTokenizer")) return 0;
  medusa::fuzz::ExerciseTokenizer(**tokenizer,
                                  "Hello world! <|im_start|>user 2024 caf\xc3\xa9 \xf0\x9f\x98\x80\n\n  x");
  const medusa::ChatMessage chat[] = {{"user", "Hi <|im_end|>"}};
  medusa::ApplyChatTemplate(**tokenizer, chat).IgnoreError();
  return 0;
}
