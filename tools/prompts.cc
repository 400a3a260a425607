#include "tools/prompts.h"

#include <string_view>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/io/file_reader.h"
#include "engine/io/json_reader.h"
#include "nlohmann/json.hpp"

namespace medusa::tools {

absl::StatusOr<std::vector<PromptSpec>> ReadPromptsFile(const std::string& path) {
  // Bounded, regular files only (a FIFO or /dev/zero fails at once); each line depth-checked.
  absl::StatusOr<std::string> text = ReadFileBounded(path, kMaxPromptsFileBytes, "prompts file");
  if (!text.ok()) return text.status();
  std::vector<PromptSpec> prompts;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto where = [&] { return absl::StrFormat("%s:%d", path, number); };
    absl::StatusOr<nlohmann::json> parsed = ParseJson(std::string_view(line.data(), line.size()), where());
    if (!parsed.ok()) return parsed.status();
    const nlohmann::json& record = *parsed;
    if (!record.is_object()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: not a JSON object", where()));
    }
    PromptSpec spec;
    if (auto it = record.find("prompt"); it != record.end() && it->is_string()) {
      spec.text = it->get<std::string>();
    } else if (auto msgs = record.find("messages"); msgs != record.end() && msgs->is_array()) {
      for (const auto& m : *msgs) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
            !m["role"].is_string() || !m["content"].is_string()) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: each message needs string \"role\" and \"content\"", where()));
        }
        spec.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
      if (spec.messages.empty()) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: \"messages\" is empty", where()));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: needs a string \"prompt\" or an array \"messages\"", where()));
    }
    prompts.push_back(std::move(spec));
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrFormat("%s has no prompts", path));
  return prompts;
}

absl::StatusOr<std::vector<PromptSpec>> ReadPrompts(const PromptSource& source) {
  const std::string& text = source.prompt;
  const std::string& file = source.prompts_file;
  if (text.empty() == file.empty()) {
    return absl::InvalidArgumentError("give exactly one of --prompt TEXT or --prompts FILE.jsonl");
  }
  if (!file.empty()) return ReadPromptsFile(file);
  return std::vector<PromptSpec>{{.text = text, .messages = {}}};
}

}  // namespace medusa::tools
