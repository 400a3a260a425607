// Every invalid request gets INVALID_ARGUMENT with a message naming the field; an
// oversized message gets RESOURCE_EXHAUSTED; the server serves normally afterwards.
// (The full waiting queue is in server_capacity_test.cc, which needs slow requests.)

#include <cmath>
#include <functional>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/unknown_field_set.h"
#include "medusa/internal/request_text.pb.h"
#include "tests/support/generate_stream.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

struct Case {
  std::string name;
  std::function<void(v1::GenerateRequest&)> edit;  // applied to a valid request
  std::string field;                               // the message must start with it
};

std::vector<Case> Cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto ids = [](std::vector<int32_t> v) {
    return [v](v1::GenerateRequest& r) {
      r.mutable_token_ids()->clear_ids();
      for (int32_t id : v) r.mutable_token_ids()->add_ids(id);
    };
  };
  auto chat = [](std::string role, std::string content) {
    return [role, content](v1::GenerateRequest& r) {
      auto* m = r.mutable_chat()->add_messages();
      m->set_role(role);
      m->set_content(content);
    };
  };
  std::string long_prompt;
  for (int i = 0; i < 600; ++i) long_prompt += "dog ";
  return {
      {"no input", [](auto& r) { r.clear_input(); }, "input"},
      {"empty prompt", [](auto& r) { r.set_prompt(""); }, "prompt"},
      {"max_tokens 0", [](auto& r) { r.set_max_tokens(0); }, "max_tokens"},
      {"max_tokens negative", [](auto& r) { r.set_max_tokens(-3); }, "max_tokens"},
      {"max_tokens past the context", [](auto& r) { r.set_max_tokens(510); }, "max_tokens"},
      {"max_tokens huge", [](auto& r) { r.set_max_tokens(1 << 30); }, "max_tokens"},
      {"prompt longer than the context", [=](auto& r) { r.set_prompt(long_prompt); }, "prompt"},
      {"token ids fill the context", ids(std::vector<int32_t>(512, 5)), "token_ids"},
      {"temperature negative", [](auto& r) { r.set_temperature(-0.5f); }, "temperature"},
      {"temperature NaN", [=](auto& r) { r.set_temperature(nan); }, "temperature"},
      {"temperature infinite", [=](auto& r) { r.set_temperature(inf); }, "temperature"},
      {"top_p 0", [](auto& r) { r.set_top_p(0); }, "top_p"},
      {"top_p above 1", [](auto& r) { r.set_top_p(1.5f); }, "top_p"},
      {"top_p NaN", [=](auto& r) { r.set_top_p(nan); }, "top_p"},
      {"top_k negative", [](auto& r) { r.set_top_k(-1); }, "top_k"},
      {"token id negative", ids({1, -1, 5}), "token_ids.ids[1]"},
      {"token id past the vocabulary", ids({1, 512}), "token_ids.ids[1]"},
      {"no token ids", ids({}), "token_ids.ids"},
      {"invalid UTF-8 prompt", [](auto& r) { r.set_prompt("Once \xff upon"); }, "prompt"},
      {"truncated UTF-8 prompt", [](auto& r) { r.set_prompt("caf\xc3"); }, "prompt"},
      {"invalid UTF-8 chat content", chat("user", "hi \xc0\xaf"), "chat.messages[0].content"},
      {"invalid UTF-8 chat role", chat("us\xfe", "hi"), "chat.messages[0].role"},
      {"invalid UTF-8 stop",
       [](auto& r) {
         r.add_stop("ok");
         r.add_stop("\xed\xa0\x80");
       },
       "stop[1]"},
      {"too many stops",
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.add_stop(absl::StrCat("s", i));
       },
       "stop"},
      {"stop too long", [](auto& r) { r.add_stop(std::string(257, 'x')); }, "stop[0]"},
      {"empty stop", [](auto& r) { r.add_stop(""); }, "stop[0]"},
      {"typical_epsilon negative", [](auto& r) { r.set_typical_epsilon(-0.1f); }, "typical_epsilon"},
      {"typical_epsilon above 1", [](auto& r) { r.set_typical_epsilon(1.5f); }, "typical_epsilon"},
      {"typical_delta above 1", [](auto& r) { r.set_typical_delta(2.0f); }, "typical_delta"},
      {"typical_delta NaN", [=](auto& r) { r.set_typical_delta(nan); }, "typical_delta"},
      {"unknown acceptance", [](auto& r) { r.set_acceptance(static_cast<v1::SamplingAcceptance>(7)); }, "acceptance"},
      {"chat without messages", [](auto& r) { r.mutable_chat(); }, "chat.messages"},
      {"chat message without role", chat("", "hi"), "chat.messages[0].role"},
      {"chat message of an unknown role", chat("narrator", "hi"), "chat.messages[0].role"},
      {"chat role that tries a control token", chat("system<|im_end|>", "hi"), "chat.messages[0].role"},
      {"chat of too many messages",
       [](auto& r) {
         for (int i = 0; i < 513; ++i) {
           auto* m = r.mutable_chat()->add_messages();
           m->set_role(i % 2 ? "assistant" : "user");
           m->set_content("hi");
         }
       },
       "chat.messages"},
      {"chat longer than the context could hold", chat("user", std::string(1 << 20, 'a')), "chat.messages"},
      {"prompt longer than the context could hold", [](auto& r) { r.set_prompt(std::string(1 << 20, 'a')); }, "prompt"},
      {"a million token ids", ids(std::vector<int32_t>(1000000, 5)), "token_ids"},
      {"chat on a model without a chat template", chat("user", "hi"), "chat"},
      {"unknown field", [](auto& r) { r.GetReflection()->MutableUnknownFields(&r)->AddVarint(99, 1); }, "request"},
      {"unknown field in a chat message",
       [](auto& r) {
         auto* m = r.mutable_chat()->add_messages();
         m->set_role("user");
         m->set_content("hi");
         m->GetReflection()->MutableUnknownFields(m)->AddLengthDelimited(7, "?");
       },
       "chat.messages[0]"},
  };
}

class ServerValidationTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& extra = {}) {
    ASSERT_MODEL_PRESENT(kStoriesModel);
    std::vector<std::string> args = {"--model=" + kStoriesModel, "--threads=1", "--kv-cache-mb=16"};
    args.insert(args.end(), extra.begin(), extra.end());
    server_.Start(args, dir_);
    ASSERT_TRUE(server_.WaitServing());
  }
  void ExpectServesNormally() {
    StreamOutcome out = RunGenerate(*server_.Stub(), GreedyRequest("Once upon a time", 20));
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_TRUE(out.finished());
    EXPECT_FALSE(out.text().empty());
  }
  TempDir dir_;
  ServerProcess server_;
};

TEST_F(ServerValidationTest, EveryInvalidFieldIsNamed) {
  Start();
  auto stub = server_.Stub();
  const std::vector<Case> cases = Cases();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::GenerateRequest request = GreedyRequest("Once upon a time", 10);
    c.edit(request);
    StreamOutcome out = RunGenerate(*stub, request);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << out.status.error_message();
    EXPECT_TRUE(absl::StartsWith(out.status.error_message(), c.field + ":"))
        << "expected the field \"" << c.field << "\" first in: " << out.status.error_message();
    EXPECT_TRUE(out.chunks.empty());
  }
  EXPECT_EQ(server_.Metric("medusa_requests_total{status=\"invalid_argument\"}"), double(cases.size()));
  EXPECT_EQ(server_.Metric("medusa_prompt_tokens_total"), 0.0);
  ExpectServesNormally();
}

TEST_F(ServerValidationTest, ValidEdgeValuesAreAccepted) {
  Start();
  auto stub = server_.Stub();
  v1::GenerateRequest request = GreedyRequest("Once upon a time", 10);
  request.set_top_p(1.0f);
  request.set_top_k(0);
  request.set_typical_epsilon(0.0f);
  request.set_typical_delta(1.0f);
  request.set_acceptance(v1::SAMPLING_ACCEPTANCE_REJECTION);
  request.add_stop(std::string(256, 'x'));
  request.add_stop("caf\xc3\xa9");
  StreamOutcome out = RunGenerate(*stub, request);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  // The whole context: prompt tokens + max_tokens == 512.
  v1::GenerateRequest fill;
  for (int i = 0; i < 500; ++i) fill.mutable_token_ids()->add_ids(i == 0 ? 1 : 300);
  fill.set_max_tokens(12);
  out = RunGenerate(*stub, fill);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.finish().usage().prompt_tokens(), 500);
  // Unset max_tokens: the default, capped by the room left (12 tokens).
  fill.clear_max_tokens();
  out = RunGenerate(*stub, fill);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_LE(out.finish().usage().generated_tokens(), 12);
}

TEST_F(ServerValidationTest, TokenizeValidatesToo) {
  Start();
  auto stub = server_.Stub();
  v1::TokenizeResponse response;
  {
    grpc::ClientContext context;
    grpc::Status status = stub->Tokenize(&context, v1::TokenizeRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StartsWith(status.error_message(), "input:")) << status.error_message();
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_prompt("bad \xff");
    grpc::Status status = stub->Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StartsWith(status.error_message(), "prompt:")) << status.error_message();
  }
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_prompt("fine");
    request.GetReflection()->MutableUnknownFields(&request)->AddFixed32(12, 7);
    grpc::Status status = stub->Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StartsWith(status.error_message(), "request: unknown field number 12"))
        << status.error_message();
  }
  {
    grpc::ClientContext context;
    v1::GetModelInfoRequest request;
    request.GetReflection()->MutableUnknownFields(&request)->AddVarint(3, 1);
    v1::ModelInfo info;
    grpc::Status status = stub->GetModelInfo(&context, request, &info);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StartsWith(status.error_message(), "request: unknown field number 3"))
        << status.error_message();
  }
}

TEST_F(ServerValidationTest, OversizedMessageIsResourceExhausted) {
  Start({"--max-message-bytes=4096"});
  StreamOutcome out = RunGenerate(*server_.Stub(), GreedyRequest(std::string(8000, 'a'), 10));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << out.status.error_message();
  ExpectServesNormally();
}

// A prompt is text: control-token markers in it are characters, so a client cannot open
// or close turns by writing them (control tokens come only as token_ids or from a chat
// template's own text).
TEST_F(ServerValidationTest, ControlTokenMarkersInAPromptAreText) {
  Start();
  auto stub = server_.Stub();
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_prompt("Once</s><s>upon");
  v1::TokenizeResponse response;
  grpc::Status status = stub->Tokenize(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GT(response.token_ids_size(), 3);
  EXPECT_EQ(response.token_ids(0), 1);  // the BOS the model wants, added by the server
  for (int i = 1; i < response.token_ids_size(); ++i) {
    EXPECT_NE(response.token_ids(i), 1) << "token " << i << " is BOS";
    EXPECT_NE(response.token_ids(i), 2) << "token " << i << " is EOS";
  }
}

// A Tokenize reply larger than what clients take by default is refused, not sent.
TEST_F(ServerValidationTest, OversizedTokenizeReplyIsResourceExhausted) {
  Start({"--max-message-bytes=4096"});
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  std::string prompt;
  while (prompt.size() < 3000) prompt += "x y ";
  request.set_prompt(prompt);
  v1::TokenizeResponse response;
  grpc::Status status = server_.Stub()->Tokenize(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "reply")) << status.error_message();
  ExpectServesNormally();
}

// The server's bytes view of the text fields must use the public field numbers.
TEST(ServerRequestTextTest, FieldNumbersMatchThePublicMessages) {
  auto same = [](const google::protobuf::Descriptor* view, const google::protobuf::Descriptor* real) {
    for (int i = 0; i < view->field_count(); ++i) {
      const google::protobuf::FieldDescriptor* v = view->field(i);
      const google::protobuf::FieldDescriptor* r = real->FindFieldByName(v->name());
      ASSERT_NE(r, nullptr) << real->full_name() << " has no field " << v->name();
      EXPECT_EQ(v->number(), r->number()) << v->full_name();
      EXPECT_EQ(v->is_repeated(), r->is_repeated()) << v->full_name();
      EXPECT_EQ(v->type() == google::protobuf::FieldDescriptor::TYPE_BYTES,
                r->type() == google::protobuf::FieldDescriptor::TYPE_STRING)
          << v->full_name();
    }
  };
  same(internal::GenerateRequestText::descriptor(), v1::GenerateRequest::descriptor());
  same(internal::TokenizeRequestText::descriptor(), v1::TokenizeRequest::descriptor());
  same(internal::ChatMessagesText::descriptor(), v1::ChatMessages::descriptor());
  same(internal::ChatMessageText::descriptor(), v1::ChatMessage::descriptor());
}

}  // namespace
}  // namespace medusa::testing
