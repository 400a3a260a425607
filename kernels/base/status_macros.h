#pragma once
// Early returns on errors, the way Abseil's own code writes them (Abseil keeps its
// macros internal, so the project has these two):
//
//   RETURN_IF_ERROR(backend.Forward(batch, &result));      // expr: an absl::Status
//   ASSIGN_OR_RETURN(MedusaTree tree, LoadTree(name, 4));  // expr: an absl::StatusOr<T>
//   ASSIGN_OR_RETURN(existing_variable, Parse(text));      // or assign to an lvalue
//
// The error is returned as it is; the enclosing function returns absl::Status or any
// absl::StatusOr. A declaration whose type holds a comma needs parentheses or auto.

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RETURN_IF_ERROR(expr)                                                    \
  do {                                                                           \
    if (::absl::Status medusa_status_ = (expr); !medusa_status_.ok()) {          \
      return medusa_status_;                                                     \
    }                                                                            \
  } while (false)

#define ASSIGN_OR_RETURN(lhs, expr) \
  MEDUSA_ASSIGN_OR_RETURN_IMPL(MEDUSA_STATUS_CONCAT(medusa_statusor_, __LINE__), lhs, expr)

// Implementation details.
#define MEDUSA_STATUS_CONCAT_INNER(a, b) a##b
#define MEDUSA_STATUS_CONCAT(a, b) MEDUSA_STATUS_CONCAT_INNER(a, b)
#define MEDUSA_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = *std::move(statusor)
