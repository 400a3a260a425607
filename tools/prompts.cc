#include "tools/prompts.h"

#include <fstream>

#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace medusa::tools {

absl::StatusOr<std::vector<PromptSpec>> ReadPromptsFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot open prompts file %s", path));
  std::vector<PromptSpec> prompts;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto where = [&] { return absl::StrFormat("%s:%d", path, number); };
    nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) {
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
