#pragma once
// Parsing JSON the engine reads from files, safely. nlohmann-json parses iteratively, but
// copying, comparing, converting and dump()ing a value recurse once per nesting level: a
// 400 KB file of 200,000 '[' parses fine and then overflows the stack. So nesting is checked
// on the raw bytes first, before anything recursive can touch the value; and errors quote at
// most a few hundred bytes of the input.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace medusa {

// Deeper than any real config (tokenizer.json nests about 6 levels).
inline constexpr int kMaxJsonDepth = 64;
// Bytes of input or of a value quoted in an error message.
inline constexpr size_t kMaxQuotedBytes = 200;

// InvalidArgument (naming `source` and the byte offset) when arrays and objects nest more than
// `max_depth` levels. One pass over the bytes, tracking nesting outside strings; text that is
// not JSON is left to the parser to report.
absl::Status CheckJsonDepth(std::string_view text, absl::string_view source, int max_depth = kMaxJsonDepth);

// CheckJsonDepth, then parse. InvalidArgument naming `source` (and where the syntax fails).
absl::StatusOr<nlohmann::json> ParseJson(std::string_view text, absl::string_view source);
// The same, keeping objects' key order.
absl::StatusOr<nlohmann::ordered_json> ParseOrderedJson(std::string_view text, absl::string_view source);

// ReadFileBounded (engine/io/file_reader.h) with `max_bytes`, then ParseJson with the path as source.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, uint64_t max_bytes, absl::string_view what);

// A value's JSON text for an error message, cut to `max_bytes` ("..." marks a cut). Never
// throws (invalid UTF-8 is replaced). Precondition: the value came from ParseJson (or is as
// shallow), so dump() cannot recurse deeply.
std::string JsonSnippet(const nlohmann::json& value, size_t max_bytes = kMaxQuotedBytes);
std::string JsonSnippet(const nlohmann::ordered_json& value, size_t max_bytes = kMaxQuotedBytes);
// Text cut to `max_bytes` for an error message.
std::string TextSnippet(std::string_view text, size_t max_bytes = kMaxQuotedBytes);

}  // namespace medusa
