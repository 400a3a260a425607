// `medusa client` and `medusa bench`: the same requests as `medusa generate`, sent to
// a medusa-server over gRPC (medusa.v1.Generator).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "kernels/base/status_macros.h"
#include "medusa/v1/generator.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/prompts.h"

ABSL_FLAG(std::string, addr, "localhost:50051", "medusa-server address, HOST:PORT (medusa client, medusa bench)");
ABSL_FLAG(int32_t, requests, 0, "medusa bench: requests in all (default: one per prompt)");
// Defined by `medusa train` (answers decoded together); `medusa bench` reads it as the
// number of requests in flight at once.
ABSL_DECLARE_FLAG(int32_t, concurrency);

namespace medusa::tools {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "medusa: %s\n", std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::Status FromGrpc(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrFormat("%s: %s", what, status.error_message()));
}

std::unique_ptr<v1::Generator::Stub> Connect() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  return v1::Generator::NewStub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_addr), grpc::InsecureChannelCredentials(), args));
}

// The request `medusa generate` would make of this prompt and the flags.
// --acceptance as the API's enum (the names `medusa generate` takes).
absl::StatusOr<v1::SamplingAcceptance> AcceptanceFromFlag() {
  const std::string name = absl::GetFlag(FLAGS_acceptance);
  if (name == "typical") return v1::SAMPLING_ACCEPTANCE_TYPICAL;
  if (name == "rejection") return v1::SAMPLING_ACCEPTANCE_REJECTION;
  return absl::InvalidArgumentError("--acceptance must be typical or rejection, got '" + name + "'");
}

v1::GenerateRequest RequestFor(const PromptSpec& spec) {
  v1::GenerateRequest request;
  if (!spec.messages.empty() || absl::GetFlag(FLAGS_chat)) {
    std::vector<ChatMessage> messages = spec.messages;
    if (messages.empty()) messages.push_back({"user", spec.text});
    for (const ChatMessage& m : messages) {
      v1::ChatMessage* out = request.mutable_chat()->add_messages();
      out->set_role(m.role);
      out->set_content(m.content);
    }
  } else {
    request.set_prompt(spec.text);
  }
  request.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  request.set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  request.set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  request.set_top_k(absl::GetFlag(FLAGS_top_k));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  for (const std::string& stop : absl::GetFlag(FLAGS_stop)) request.add_stop(stop);
  request.set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  request.set_medusa(!absl::GetFlag(FLAGS_no_medusa));
  request.set_typical_epsilon(static_cast<float>(absl::GetFlag(FLAGS_typical_epsilon)));
  request.set_typical_delta(static_cast<float>(absl::GetFlag(FLAGS_typical_delta)));
  request.set_acceptance(AcceptanceFromFlag().value_or(v1::SAMPLING_ACCEPTANCE_UNSPECIFIED));
  return request;
}

// One Generate stream, timed on the client.
struct StreamResult {
  std::vector<int32_t> token_ids;
  std::string text;
  v1::Finish finish;
  double ttft_ms = 0;
  double e2e_ms = 0;
  std::vector<double> itl_ms;  // one per token after the first
};

using TextSink = std::function<void(const std::string&)>;

absl::StatusOr<StreamResult> RunStream(v1::Generator::Stub& stub, const v1::GenerateRequest& request,
                                       const TextSink& on_text = nullptr) {
  grpc::ClientContext context;
  StreamResult result;
  const absl::Time start = absl::Now();
  absl::Time last = start;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    const absl::Time now = absl::Now();
    const int n = response.token_ids_size();
    if (n > 0) {
      if (result.token_ids.empty()) {
        result.ttft_ms = absl::ToDoubleMilliseconds(now - start);
      } else {
        result.itl_ms.insert(result.itl_ms.end(), n, absl::ToDoubleMilliseconds(now - last) / n);
      }
      last = now;
    }
    result.token_ids.insert(result.token_ids.end(), response.token_ids().begin(), response.token_ids().end());
    result.text += response.text();
    if (on_text && !response.text().empty()) on_text(response.text());
    if (response.has_finish()) result.finish = response.finish();
  }
  RETURN_IF_ERROR(FromGrpc(reader->Finish(), "Generate"));
  result.e2e_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  return result;
}

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    default: return "";
  }
}

// The JSON `medusa generate --json` prints, from the stream and its usage.
nlohmann::json ResultJson(const StreamResult& r, const v1::ModelInfo& info, bool medusa) {
  const v1::Usage& u = r.finish.usage();
  const bool tree = medusa && info.has_heads() && info.tree().num_nodes() > 1;
  const int new_tokens = u.generated_tokens();
  return {
      {"mode", tree ? "medusa" : "plain"},
      {"tree_nodes", medusa && info.has_heads() ? info.tree().num_nodes() : 1},
      {"accepted_tokens", u.accepted_draft_tokens()},
      {"accepted_per_position", std::vector<int>(u.accepted_per_position().begin(), u.accepted_per_position().end())},
      {"accepted_length_counts",
       std::vector<int>(u.accepted_length_counts().begin(), u.accepted_length_counts().end())},
      {"prompt_tokens", u.prompt_tokens()},
      {"new_tokens", new_tokens},
      {"token_ids", r.token_ids},
      {"text", r.text},
      {"steps", u.decoding_steps()},
      {"acceleration_rate", u.acceleration_rate()},
      {"prefill_seconds", u.prefill_seconds()},
      {"prefill_tokens_per_second", u.prefill_seconds() > 0 ? u.prompt_tokens() / u.prefill_seconds() : 0.0},
      {"decode_seconds", u.decode_seconds()},
      {"tokens_per_second", u.decode_seconds() > 0 ? (new_tokens - 1) / u.decode_seconds() : 0.0},
      {"mean_step_ms", u.decoding_steps() > 1 ? 1e3 * u.decode_seconds() / (u.decoding_steps() - 1) : 0.0},
      {"finish_reason", FinishReasonName(r.finish.reason())},
      {"time_to_first_token_seconds", u.time_to_first_token_seconds()},
      {"total_seconds", u.total_seconds()},
  };
}

absl::StatusOr<v1::ModelInfo> GetModelInfo(v1::Generator::Stub& stub) {
  grpc::ClientContext context;
  v1::ModelInfo info;
  RETURN_IF_ERROR(FromGrpc(stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info), "GetModelInfo"));
  return info;
}

// The q-quantile (0..1) of `values`, linearly interpolated; 0 when empty.
double Quantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double position = q * (values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (position - below) * (values[above] - values[below]);
}

}  // namespace

int RunClient() {
  if (absl::Status s = AcceptanceFromFlag().status(); !s.ok()) return Fail(s);
  absl::StatusOr<std::vector<PromptSpec>> prompts = PromptsFromFlags();
  if (!prompts.ok()) return Fail(prompts.status());
  std::unique_ptr<v1::Generator::Stub> stub = Connect();
  absl::StatusOr<v1::ModelInfo> info = GetModelInfo(*stub);
  if (!info.ok()) return Fail(info.status());
  const bool json = absl::GetFlag(FLAGS_json);
  const bool medusa = !absl::GetFlag(FLAGS_no_medusa);
  for (const PromptSpec& spec : *prompts) {
    TextSink print = nullptr;
    if (!json) {
      print = [](const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
      };
    }
    absl::StatusOr<StreamResult> result = RunStream(*stub, RequestFor(spec), print);
    if (!result.ok()) return Fail(result.status());
    const nlohmann::json summary = ResultJson(*result, *info, medusa);
    if (json) {
      std::cout << summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    } else {
      std::fprintf(stderr,
                   "\n[%d prompt tokens, %d new tokens in %d steps (%.2f tokens/step, %s); first token "
                   "after %.1f ms, decode %.1f tok/s; %s]\n",
                   summary["prompt_tokens"].get<int>(), summary["new_tokens"].get<int>(),
                   summary["steps"].get<int>(), summary["acceleration_rate"].get<double>(),
                   summary["mode"].get<std::string>().c_str(), result->ttft_ms,
                   summary["tokens_per_second"].get<double>(), summary["finish_reason"].get<std::string>().c_str());
    }
  }
  return 0;
}

int RunBench() {
  if (absl::Status s = AcceptanceFromFlag().status(); !s.ok()) return Fail(s);
  const std::string file = absl::GetFlag(FLAGS_prompts);
  if (file.empty()) return Fail(absl::InvalidArgumentError("medusa bench needs --prompts FILE.jsonl"));
  absl::StatusOr<std::vector<PromptSpec>> prompts = ReadPromptsFile(file);
  if (!prompts.ok()) return Fail(prompts.status());
  if (prompts->empty()) return Fail(absl::InvalidArgumentError(file + " has no prompts"));
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int total = absl::GetFlag(FLAGS_requests) > 0 ? absl::GetFlag(FLAGS_requests)
                                                      : static_cast<int>(prompts->size());
  if (concurrency < 1) return Fail(absl::InvalidArgumentError("--concurrency must be >= 1"));
  std::vector<v1::GenerateRequest> requests;
  for (const PromptSpec& spec : *prompts) requests.push_back(RequestFor(spec));

  std::unique_ptr<v1::Generator::Stub> stub = Connect();
  std::atomic<int> next{0};
  std::mutex mu;
  std::vector<double> ttft, itl, e2e;
  int64_t new_tokens = 0, steps = 0;
  int errors = 0;
  std::string first_error;
  const absl::Time start = absl::Now();
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        absl::StatusOr<StreamResult> r = RunStream(*stub, requests[i % requests.size()]);
        std::lock_guard<std::mutex> lock(mu);
        if (!r.ok()) {
          if (errors++ == 0) first_error = std::string(r.status().message());
          continue;
        }
        ttft.push_back(r->ttft_ms);
        e2e.push_back(r->e2e_ms);
        itl.insert(itl.end(), r->itl_ms.begin(), r->itl_ms.end());
        new_tokens += r->finish.usage().generated_tokens();
        steps += r->finish.usage().decoding_steps();
      }
    });
  }
  for (std::thread& t : workers) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (errors > 0) std::fprintf(stderr, "medusa bench: %d requests failed; the first: %s\n", errors, first_error.c_str());

  nlohmann::json summary = {
      {"requests", total},
      {"errors", errors},
      {"concurrency", concurrency},
      {"medusa", !absl::GetFlag(FLAGS_no_medusa)},
      {"seconds", seconds},
      {"new_tokens", new_tokens},
      {"tokens_per_second", seconds > 0 ? new_tokens / seconds : 0.0},
      {"acceleration_rate", steps > 0 ? double(new_tokens) / steps : 0.0},
      {"ttft_ms_p50", Quantile(ttft, 0.5)},
      {"ttft_ms_p99", Quantile(ttft, 0.99)},
      {"itl_ms_p50", Quantile(itl, 0.5)},
      {"itl_ms_p99", Quantile(itl, 0.99)},
      {"e2e_ms_p50", Quantile(e2e, 0.5)},
      {"e2e_ms_p99", Quantile(e2e, 0.99)},
  };
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::printf(
        "%d requests (%d errors) at concurrency %d in %.2f s: %lld new tokens, %.1f tokens/s, %.2f tokens/step\n"
        "TTFT p50 %.1f ms p99 %.1f ms; inter-token p50 %.2f ms p99 %.2f ms; end-to-end p50 %.1f ms p99 %.1f ms\n",
        total, errors, concurrency, seconds, static_cast<long long>(new_tokens),
        summary["tokens_per_second"].get<double>(), summary["acceleration_rate"].get<double>(),
        summary["ttft_ms_p50"].get<double>(), summary["ttft_ms_p99"].get<double>(),
        summary["itl_ms_p50"].get<double>(), summary["itl_ms_p99"].get<double>(),
        summary["e2e_ms_p50"].get<double>(), summary["e2e_ms_p99"].get<double>());
  }
  return errors > 0 ? 1 : 0;
}

}  // namespace medusa::tools
