#pragma once
// One server-streaming Generate call as a client makes it, recorded chunk by chunk.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "medusa/v1/generator.grpc.pb.h"

namespace medusa::testing {

// One Generate stream as the client saw it.
struct StreamOutcome {
  grpc::Status status;
  absl::Time start;
  std::vector<v1::GenerateResponse> chunks;
  std::vector<absl::Time> arrivals;

  std::string text() const;
  std::vector<int32_t> ids() const;
  bool finished() const { return !chunks.empty() && chunks.back().has_finish(); }
  // The last chunk's finish; an empty Finish when no chunk came (a failed call), so a test
  // that reads it after a failure fails on its values instead of crashing.
  const v1::Finish& finish() const {
    return chunks.empty() ? v1::Finish::default_instance() : chunks.back().finish();
  }
};

struct StreamOptions {
  int cancel_after_chunks = -1;                      // TryCancel once this many arrived
  absl::Duration timeout = absl::InfiniteDuration();  // the call's deadline
  std::function<void(int chunk)> on_chunk;           // called after each chunk
  // Wait for the connection instead of failing UNAVAILABLE when its first attempt fails: for
  // tests about the server's answer, not about connecting.
  bool wait_for_ready = false;
};

StreamOutcome RunGenerate(v1::Generator::Stub& stub, const v1::GenerateRequest& request,
                          const StreamOptions& options = {});

// A greedy request for `prompt`, Medusa on or off.
v1::GenerateRequest GreedyRequest(const std::string& prompt, int max_tokens, bool medusa = true);

}  // namespace medusa::testing
