#pragma once
// Loaders run under a guard that turns exceptions from the libraries they use into a Status,
// so that no crafted file can end the process by an uncaught exception: an allocation that
// fails (std::bad_alloc, std::length_error) becomes ResourceExhausted, and a JSON value of an
// unexpected type met by nlohmann-json's accessors (json::exception) becomes InvalidArgument.
// Both name what was being loaded.

#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/io/json_reader.h"
#include "nlohmann/json.hpp"

namespace medusa {

// Runs `load` (returning absl::Status or absl::StatusOr<T>) and returns its result, or the
// error for an exception it threw. `what` names the file ("GGUF model 'x.gguf'").
template <typename Load>
auto GuardLoad(const std::string& what, Load&& load) -> decltype(load()) {
  try {
    return std::forward<Load>(load)();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory while loading it"));
  } catch (const std::length_error& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": too large to load (", TextSnippet(e.what()), ")"));
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": unexpected JSON (", TextSnippet(e.what()), ")"));
  }
}

}  // namespace medusa
