// The bad-input matrix (docs/bad_inputs.md) over a real server: hostile or careless
// requests, transport bytes, files and flags each get their stated outcome, quickly, and
// the server serves normally afterwards. Field-by-field request checks are in
// server_validation_test.cc; crafted model, heads, tree and tokenizer files in
// tests/unit/crafted_files_test.cc; TLS and tokens in server_security_test.cc.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/sync_stream.h"
#include "tests/support/generate_stream.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

constexpr int kMessageLimit = 4 << 20;               // the server's default --max-message-bytes
constexpr absl::Duration kQuick = absl::Seconds(2);  // a refusal costs no tokenization

class ServerBadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::ifstream(kStoriesModel).good()) return;
    dir_ = new TempDir();
    server_ = new ServerProcess();
    server_->Start({"--model=" + kStoriesModel, "--threads=1", "--kv-cache-mb=16"}, *dir_);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete dir_;
    server_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_MODEL_PRESENT(kStoriesModel);
    ASSERT_TRUE(server_->WaitServing());
  }
  // Every case ends with this: the server still answers a normal request correctly. On a
  // connection of its own: a case may end with the server closing the case's connection
  // (gRPC does for metadata past its hard limit), which says nothing of the server.
  void TearDown() override {
    if (server_ == nullptr || HasFatalFailure()) return;
    StreamOutcome out = RunGenerate(*server_->StubOnNewConnection(), GreedyRequest("Once upon a time", 12));
    EXPECT_TRUE(out.status.ok()) << "after this case the server failed a normal request: "
                                 << out.status.error_message();
    EXPECT_TRUE(out.finished());
  }

  // Generate with the request given as raw wire bytes; the final status.
  static grpc::Status GenerateBytes(const std::string& wire, grpc::ClientContext* context = nullptr) {
    grpc::ClientContext own;
    if (context == nullptr) context = &own;
    grpc::Slice slice(wire);
    grpc::ByteBuffer request(&slice, 1);
    const grpc::internal::RpcMethod method("/medusa.v1.Generator/Generate",
                                           grpc::internal::RpcMethod::SERVER_STREAMING);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(server_->Channel().get(), method, context,
                                                                      request));
    grpc::ByteBuffer chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  }

  static TempDir* dir_;
  static ServerProcess* server_;
};
TempDir* ServerBadInputTest::dir_ = nullptr;
ServerProcess* ServerBadInputTest::server_ = nullptr;

// Expects `code` within `bound`, and the message to start with `prefix` when given.
void ExpectRefused(const grpc::Status& status, grpc::StatusCode code, absl::Time start, const std::string& prefix = "",
                   absl::Duration bound = kQuick) {
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  if (!prefix.empty()) {
    EXPECT_TRUE(absl::StartsWith(status.error_message(), prefix)) << status.error_message();
  }
  EXPECT_LT(absl::Now() - start, bound) << "took " << absl::Now() - start;
}

TEST_F(ServerBadInputTest, PromptJustUnderTheMessageLimitIsRefusedBeforeTokenizing) {
  const absl::Time start = absl::Now();
  StreamOutcome out = RunGenerate(*server_->Stub(), GreedyRequest(std::string(kMessageLimit - 64, 'a'), 10));
  ExpectRefused(out.status, grpc::StatusCode::INVALID_ARGUMENT, start, "prompt:");
  EXPECT_TRUE(absl::StrContains(out.status.error_message(), "bytes of text")) << out.status.error_message();
}

TEST_F(ServerBadInputTest, PromptOverTheMessageLimitIsResourceExhausted) {
  const absl::Time start = absl::Now();
  StreamOutcome out = RunGenerate(*server_->Stub(), GreedyRequest(std::string(kMessageLimit + 1, 'a'), 10));
  ExpectRefused(out.status, grpc::StatusCode::RESOURCE_EXHAUSTED, start);
}

TEST_F(ServerBadInputTest, TwoHundredThousandChatMessages) {
  v1::GenerateRequest request;
  for (int i = 0; i < 200000; ++i) {
    v1::ChatMessage* m = request.mutable_chat()->add_messages();
    m->set_role(i % 2 ? "assistant" : "user");
    m->set_content("hi");
  }
  const absl::Time start = absl::Now();
  StreamOutcome out = RunGenerate(*server_->Stub(), request);
  ExpectRefused(out.status, grpc::StatusCode::INVALID_ARGUMENT, start, "chat.messages:");
}

TEST_F(ServerBadInputTest, TokenizeOfAHugePromptIsRefusedBeforeTokenizing) {
  grpc::ClientContext context;
  v1::TokenizeRequest request;
  request.set_prompt(std::string(kMessageLimit - 64, 'b'));
  v1::TokenizeResponse response;
  const absl::Time start = absl::Now();
  ExpectRefused(server_->Stub()->Tokenize(&context, request, &response), grpc::StatusCode::INVALID_ARGUMENT, start,
                "prompt:");
}

// Extreme values of every numeric field: each is either served or refused naming the
// field, never a crash or a hang.
TEST_F(ServerBadInputTest, ExtremeNumericValues) {
  struct Extreme {
    std::string name;
    std::function<void(v1::GenerateRequest&)> edit;
    std::string refused_field;  // "" when the value is valid
  };
  const float denormal = std::numeric_limits<float>::denorm_min();
  const std::vector<Extreme> extremes = {
      {"max_tokens INT32_MAX", [](auto& r) { r.set_max_tokens(INT32_MAX); }, "max_tokens"},
      {"max_tokens INT32_MIN", [](auto& r) { r.set_max_tokens(INT32_MIN); }, "max_tokens"},
      {"temperature FLT_MAX", [](auto& r) { r.set_temperature(FLT_MAX); }, ""},
      {"temperature denormal", [=](auto& r) { r.set_temperature(denormal); }, ""},
      {"temperature -0", [](auto& r) { r.set_temperature(-0.0f); }, ""},
      {"temperature -FLT_MAX", [](auto& r) { r.set_temperature(-FLT_MAX); }, "temperature"},
      {"top_p denormal",
       [=](auto& r) {
         r.set_top_p(denormal);
         r.set_temperature(1);
       },
       ""},
      {"top_p FLT_MAX", [](auto& r) { r.set_top_p(FLT_MAX); }, "top_p"},
      {"top_k INT32_MAX",
       [](auto& r) {
         r.set_top_k(INT32_MAX);
         r.set_temperature(1);
       },
       ""},
      {"top_k INT32_MIN", [](auto& r) { r.set_top_k(INT32_MIN); }, "top_k"},
      {"seed UINT64_MAX",
       [](auto& r) {
         r.set_seed(UINT64_MAX);
         r.set_temperature(0.8f);
       },
       ""},
      {"typical_epsilon denormal",
       [=](auto& r) {
         r.set_typical_epsilon(denormal);
         r.set_temperature(1);
       },
       ""},
      {"typical_delta -FLT_MAX", [](auto& r) { r.set_typical_delta(-FLT_MAX); }, "typical_delta"},
      {"acceptance INT32_MAX", [](auto& r) { r.set_acceptance(static_cast<v1::SamplingAcceptance>(INT32_MAX)); },
       "acceptance"},
      {"acceptance -1", [](auto& r) { r.set_acceptance(static_cast<v1::SamplingAcceptance>(-1)); }, "acceptance"},
      {"token id INT32_MAX", [](auto& r) { r.mutable_token_ids()->add_ids(INT32_MAX); }, "token_ids.ids[0]"},
      {"token id INT32_MIN", [](auto& r) { r.mutable_token_ids()->add_ids(INT32_MIN); }, "token_ids.ids[0]"},
  };
  auto stub = server_->Stub();
  for (const Extreme& e : extremes) {
    SCOPED_TRACE(e.name);
    v1::GenerateRequest request = GreedyRequest("Once upon a time", 8);
    e.edit(request);
    const absl::Time start = absl::Now();
    StreamOutcome out = RunGenerate(*stub, request);
    if (e.refused_field.empty()) {
      EXPECT_TRUE(out.status.ok()) << out.status.error_message();
      EXPECT_TRUE(out.finished());
      EXPECT_LE(out.finish().usage().generated_tokens(), 8);
    } else {
      ExpectRefused(out.status, grpc::StatusCode::INVALID_ARGUMENT, start, e.refused_field + ":");
    }
  }
}

// Unknown fields as groups nested `depth` deep: wire bytes protobuf parses recursively.
std::string NestedUnknownGroups(int depth) {
  std::string wire = "\x0a\x04Once";                               // prompt = "Once"
  for (int i = 0; i < depth; ++i) wire += '\xa3', wire += '\x06';  // field 100, start group (varint 803)
  for (int i = 0; i < depth; ++i) wire += '\xa4', wire += '\x06';  // field 100, end group (varint 804)
  return wire;
}

TEST_F(ServerBadInputTest, UnknownFieldsNestedNinetyDeep) {
  const absl::Time start = absl::Now();
  ExpectRefused(GenerateBytes(NestedUnknownGroups(90)), grpc::StatusCode::INVALID_ARGUMENT, start,
                "request: unknown field number 100");
}

TEST_F(ServerBadInputTest, UnknownFieldsNestedPastTheParsersRecursionLimit) {
  const absl::Time start = absl::Now();
  ExpectRefused(GenerateBytes(NestedUnknownGroups(5000)), grpc::StatusCode::INVALID_ARGUMENT, start,
                "request: the bytes are not");
}

TEST_F(ServerBadInputTest, GarbageBytes) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::string wire(1 + rng() % 2000, '\0');
    for (char& c : wire) c = static_cast<char>(rng());
    const absl::Time start = absl::Now();
    grpc::Status status = GenerateBytes(wire);
    // Random bytes that happen to parse are a request with unknown fields or bad values.
    ExpectRefused(status, grpc::StatusCode::INVALID_ARGUMENT, start);
  }
}

TEST_F(ServerBadInputTest, TruncatedRequest) {
  v1::GenerateRequest request = GreedyRequest("Once upon a time there was", 8);
  request.add_stop("The end");
  const std::string wire = request.SerializeAsString();
  for (size_t cut : {wire.size() - 1, wire.size() / 2, size_t{1}}) {
    SCOPED_TRACE(cut);
    const absl::Time start = absl::Now();
    ExpectRefused(GenerateBytes(wire.substr(0, cut)), grpc::StatusCode::INVALID_ARGUMENT, start);
  }
}

TEST_F(ServerBadInputTest, EmptyRequestNamesTheMissingInput) {
  const absl::Time start = absl::Now();
  ExpectRefused(GenerateBytes(""), grpc::StatusCode::INVALID_ARGUMENT, start, "input:");
}

// A gzip-compressed request of a few KiB that expands past the message limit.
TEST_F(ServerBadInputTest, CompressedRequestExpandingPastTheLimit) {
  grpc::ClientContext context;
  context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  const absl::Time start = absl::Now();
  StreamOutcome out;
  {
    v1::GenerateRequest request = GreedyRequest(std::string(16 << 20, 'a'), 8);
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = server_->Stub()->Generate(&context, request);
    v1::GenerateResponse chunk;
    while (reader->Read(&chunk)) {
    }
    out.status = reader->Finish();
  }
  ExpectRefused(out.status, grpc::StatusCode::RESOURCE_EXHAUSTED, start, "", absl::Seconds(10));
}

TEST_F(ServerBadInputTest, OversizedMetadata) {
  grpc::ClientContext context;
  context.AddMetadata("x-padding", std::string(64 << 10, 'm'));
  v1::GenerateRequest request = GreedyRequest("Once upon a time", 8);
  const absl::Time start = absl::Now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = server_->Stub()->Generate(&context, request);
  v1::GenerateResponse chunk;
  while (reader->Read(&chunk)) {
  }
  grpc::Status status = reader->Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_LT(absl::Now() - start, kQuick);
}

// Sends `bytes` on a fresh TCP connection to the gRPC port and reads until the server
// closes it (true) or `timeout` passes (false).
bool ServerClosesAfter(int port, const std::string& bytes, absl::Duration timeout) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  bool closed = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())) {
    const absl::Time end = absl::Now() + timeout;
    char buffer[4096];
    while (absl::Now() < end) {
      const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        closed = true;
        break;
      }
    }
  }
  close(fd);
  return closed;
}

TEST_F(ServerBadInputTest, HttpOneRequestOnTheGrpcPort) {
  EXPECT_TRUE(ServerClosesAfter(server_->port(), "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", absl::Seconds(10)));
}

TEST_F(ServerBadInputTest, TlsHandshakeOnThePlaintextPort) {
  // The start of a TLS 1.2 ClientHello record.
  std::string hello = {'\x16', '\x03', '\x01', '\x00', '\xa5', '\x01', '\x00', '\x00', '\xa1', '\x03', '\x03'};
  hello += std::string(32, '\x42');
  hello += std::string({'\x00', '\x00', '\x02', '\x13', '\x01'});
  EXPECT_TRUE(ServerClosesAfter(server_->port(), hello, absl::Seconds(10)));
}

TEST_F(ServerBadInputTest, HttpTwoPrefaceThenGarbage) {
  EXPECT_TRUE(ServerClosesAfter(server_->port(), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + std::string(64, '\xff'),
                                absl::Seconds(10)));
}

// ------------------------------------------------------------ start-up: files and flags

struct StartupCase {
  std::string name;
  std::vector<std::string> args;
  int exit_code;
  std::string log_says;
};

void ExpectStartupRefused(const StartupCase& c) {
  SCOPED_TRACE(c.name);
  TempDir dir;
  ServerProcess server;
  server.Start(c.args, dir);
  const std::optional<int> code = server.WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << "still running after 30 s; log:\n" << server.Log();
  EXPECT_EQ(*code, c.exit_code) << server.Log();
  EXPECT_TRUE(absl::StrContains(server.Log(), c.log_says)) << "expected \"" << c.log_says << "\" in:\n" << server.Log();
}

// A safetensors heads file whose __metadata__ nests 200,000 arrays (400 KB): it used to
// overflow the stack when the metadata was copied (exit 139).
std::string DeeplyNestedHeads(const TempDir& dir) {
  const std::string header = R"({"__metadata__":{"x":)" + std::string(200000, '[') + std::string(200000, ']') + "}}";
  std::string bytes(8, '\0');
  const uint64_t size = header.size();
  std::memcpy(bytes.data(), &size, sizeof(size));
  const std::string path = dir.file("deep.medusa.safetensors");
  std::ofstream(path, std::ios::binary) << bytes << header;
  return path;
}

TEST(ServerBadStartupTest, FileArgumentsThatAreNotFiles) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  TempDir dir;
  const std::string fifo = dir.file("fifo"), empty_dir = dir.file("empty-dir");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(mkdir(empty_dir.c_str(), 0700), 0);
  const std::string model = "--model=" + kStoriesModel;
  const std::vector<StartupCase> cases = {
      {"model /dev/zero", {"--model=/dev/zero"}, 1, "/dev/zero"},
      {"model FIFO", {"--model=" + fifo}, 1, fifo},
      {"model an empty directory", {"--model=" + empty_dir}, 1, "empty-dir"},
      {"tokenizer a directory", {model, "--tokenizer=" + empty_dir}, 1, "empty-dir"},
      {"tokenizer /dev/zero", {model, "--tokenizer=/dev/zero"}, 1, "/dev/zero"},
      {"tokenizer FIFO", {model, "--tokenizer=" + fifo}, 1, fifo},
      {"heads /dev/zero", {model, "--heads=/dev/zero"}, 1, "/dev/zero"},
      {"heads FIFO", {model, "--heads=" + fifo}, 1, fifo},
      {"heads with __metadata__ nested 200,000 deep", {model, "--heads=" + DeeplyNestedHeads(dir)}, 1, "nest"},
  };
  for (const StartupCase& c : cases) ExpectStartupRefused(c);
}

TEST(ServerBadStartupTest, AbsurdFlagValues) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  const std::string model = "--model=" + kStoriesModel;
  const std::vector<StartupCase> cases = {
      {"port 70000", {model, "--port=70000"}, 2, "--port"},
      {"metrics port -1", {model, "--metrics-port=-1"}, 2, "--metrics-port"},
      {"max running 0", {model, "--max-running=0"}, 2, "--max-running"},
      {"max waiting -1", {model, "--max-waiting=-1"}, 2, "--max-waiting"},
      {"max message bytes 0", {model, "--max-message-bytes=0"}, 2, "--max-message-bytes"},
      // Values Abseil cannot parse: its own message and exit code 1.
      {"max message bytes not a number", {model, "--max-message-bytes=lots"}, 1, "max_message_bytes"},
      {"port past int32", {model, "--port=99999999999"}, 1, "port"},
      {"unknown flag", {model, "--frobnicate=1"}, 1, "frobnicate"},
      {"grace NaN", {model, "--shutdown-grace-seconds=nan"}, 2, "--shutdown-grace-seconds"},
      {"threads -1", {model, "--threads=-1"}, 2, "--threads"},
      {"KV cache -5 MB", {model, "--kv-cache-mb=-5"}, 2, "--kv-cache-mb"},
      {"KV cache 100 TB", {model, "--kv-cache-mb=100000000"}, 1, "KV"},
      {"tree without heads", {model, "--tree=no-such-tree"}, 2, "--tree needs Medusa heads"},
      {"log level", {model, "--log-level=verbose"}, 2, "verbose"},
      {"no model", {}, 2, "--model"},
  };
  for (const StartupCase& c : cases) ExpectStartupRefused(c);
}

}  // namespace
}  // namespace medusa::testing
