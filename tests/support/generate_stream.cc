#include "tests/support/generate_stream.h"

#include "absl/time/clock.h"
#include "grpcpp/client_context.h"

namespace medusa::testing {

std::string StreamOutcome::text() const {
  std::string out;
  for (const auto& c : chunks) out += c.text();
  return out;
}

std::vector<int32_t> StreamOutcome::ids() const {
  std::vector<int32_t> out;
  for (const auto& c : chunks) out.insert(out.end(), c.token_ids().begin(), c.token_ids().end());
  return out;
}

StreamOutcome RunGenerate(v1::Generator::Stub& stub, const v1::GenerateRequest& request,
                          const StreamOptions& options) {
  grpc::ClientContext context;
  if (options.timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  }
  context.set_wait_for_ready(options.wait_for_ready);
  StreamOutcome out;
  out.start = absl::Now();
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    out.chunks.push_back(response);
    out.arrivals.push_back(absl::Now());
    if (options.on_chunk) options.on_chunk(static_cast<int>(out.chunks.size()));
    if (static_cast<int>(out.chunks.size()) == options.cancel_after_chunks) context.TryCancel();
  }
  out.status = reader->Finish();
  return out;
}

v1::GenerateRequest GreedyRequest(const std::string& prompt, int max_tokens, bool medusa) {
  v1::GenerateRequest request;
  request.set_prompt(prompt);
  request.set_max_tokens(max_tokens);
  request.set_medusa(medusa);
  return request;
}

}  // namespace medusa::testing
