#include "engine/io/json_reader.h"

#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/io/file_reader.h"

namespace medusa {
namespace {

template <typename Json>
absl::StatusOr<Json> Parse(std::string_view text, absl::string_view source) {
  if (absl::Status depth = CheckJsonDepth(text, source); !depth.ok()) return depth;
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's message quotes the last token read, which can be the whole input.
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON (", TextSnippet(e.what()), ")"));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": cannot parse JSON (", TextSnippet(e.what()), ")"));
  }
}

template <typename Json>
std::string Snippet(const Json& value, size_t max_bytes) {
  return TextSnippet(value.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace), max_bytes);
}

}  // namespace

absl::Status CheckJsonDepth(std::string_view text, absl::string_view source, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": JSON nests deeper than ", max_depth, " levels (at byte ", i, ")"));
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view source) {
  return Parse<nlohmann::json>(text, source);
}

absl::StatusOr<nlohmann::ordered_json> ParseOrderedJson(std::string_view text, absl::string_view source) {
  return Parse<nlohmann::ordered_json>(text, source);
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, uint64_t max_bytes, absl::string_view what) {
  absl::StatusOr<std::string> text = ReadFileBounded(path, max_bytes, what);
  if (!text.ok()) return text.status();
  return ParseJson(*text, absl::StrCat(what, " '", path, "'"));
}

std::string JsonSnippet(const nlohmann::json& value, size_t max_bytes) { return Snippet(value, max_bytes); }
std::string JsonSnippet(const nlohmann::ordered_json& value, size_t max_bytes) { return Snippet(value, max_bytes); }

std::string TextSnippet(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
  return absl::StrCat(absl::string_view(text.data(), cut), "...");
}

}  // namespace medusa
