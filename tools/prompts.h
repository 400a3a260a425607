#pragma once
// Prompts for the CLI: --prompt TEXT or a JSONL file.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/tokenizer/tokenizer.h"
#include "tools/command_options.h"

namespace medusa::tools {

struct PromptSpec {
  std::string text;                   // a plain prompt, or
  std::vector<ChatMessage> messages;  // a conversation (chat template applies)
};

// Reads {"prompt": "..."} or {"messages": [{"role": ..., "content": ...}]} per
// line; blank lines are skipped. Errors name the line.
absl::StatusOr<std::vector<PromptSpec>> ReadPromptsFile(const std::string& path);

// The prompts --prompt TEXT or --prompts FILE.jsonl name (exactly one of them).
absl::StatusOr<std::vector<PromptSpec>> ReadPrompts(const PromptSource& source);

}  // namespace medusa::tools
