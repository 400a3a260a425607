// The server's security options over loopback, with a real medusa-server (stories260K) and
// real gRPC clients: TLS and mutual TLS with throwaway certificates made by the `openssl`
// command, the bearer token (every service but health), reflection and file paths off by
// default, the refusal to serve a non-loopback address unprotected, bad security files and
// flags failing at start-up (exit 2), the metrics endpoint under a stalled connection,
// connection limits (count, handshake, age, keepalive), a taken port, and SIGTERM while the
// model loads.

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "tests/support/commands.h"
#include "tests/support/generate_stream.h"
#include "tests/support/loopback.h"
#include "tests/support/random_heads.h"
#include "tests/support/raw_http2_peer.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

using grpc::health::v1::HealthCheckResponse;

constexpr char kToken[] = "s3cret-Token_0123456789abcdef";

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Throwaway PKI in a temp dir: a CA, a server certificate for 127.0.0.1 and localhost, a
// client certificate from the same CA, and a second CA with its own client certificate.
struct Certificates {
  explicit Certificates(const TempDir& dir) : dir_(dir) {
    WriteText(dir.file("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    MakeCa("ca");
    MakeCa("other_ca");
    MakeLeaf("server", "ca", "-extfile " + dir.file("server.ext"));
    MakeLeaf("client", "ca", "");
    MakeLeaf("stranger", "other_ca", "");
  }
  std::string pem(const std::string& name) const { return dir_.file(name + ".pem"); }
  std::string key(const std::string& name) const { return dir_.file(name + ".key"); }

  // Channel credentials trusting `ca`, with `client`'s certificate when given.
  std::shared_ptr<grpc::ChannelCredentials> Channel(const std::string& ca, const std::string& client = "") const {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadText(pem(ca));
    if (!client.empty()) {
      options.pem_cert_chain = ReadText(pem(client));
      options.pem_private_key = ReadText(key(client));
    }
    return grpc::SslCredentials(options);
  }

 private:
  static constexpr char kKey[] = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  void Openssl(const std::string& args) {
    const CommandOutput out = RunCommand("openssl " + args);
    ASSERT_EQ(out.exit_code, 0) << "openssl " << args << "\n" << out.output;
  }
  void MakeCa(const std::string& name) {
    Openssl(absl::StrCat("req -x509 ", kKey, " -days 2 -subj /CN=", name, " -keyout ", key(name), " -out ", pem(name)));
  }
  void MakeLeaf(const std::string& name, const std::string& ca, const std::string& extensions) {
    const std::string csr = dir_.file(name + ".csr");
    Openssl(absl::StrCat("req ", kKey, " -subj /CN=", name, " -keyout ", key(name), " -out ", csr));
    Openssl(absl::StrCat("x509 -req -days 2 -in ", csr, " -CA ", pem(ca), " -CAkey ", key(ca), " -CAcreateserial -out ",
                         pem(name), " ", extensions));
  }
  const TempDir& dir_;
};

std::vector<std::string> StoriesArgs() { return {"--model=" + kStoriesModel, "--threads=1", "--kv-cache-mb=16"}; }

std::vector<std::string> Plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A stub on its own channel to the server with these credentials (and a token, if given).
std::unique_ptr<v1::Generator::Stub> StubWith(const ServerProcess& server,
                                              std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return v1::Generator::NewStub(
      grpc::CreateCustomChannel(server.target(), std::move(credentials), ServerProcess::FastReconnect()));
}

grpc::Status ModelInfoStatus(v1::Generator::Stub& stub, const std::string& authorization = "") {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  v1::ModelInfo info;
  return stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
}

grpc::Status TokenizeStatus(v1::Generator::Stub& stub, const std::string& authorization = "") {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  v1::TokenizeRequest request;
  request.set_prompt("Once upon a time");
  v1::TokenizeResponse response;
  return stub.Tokenize(&context, request, &response);
}

StreamOutcome GenerateWith(v1::Generator::Stub& stub, const std::string& authorization) {
  // RunGenerate makes its own context: send the header through a raw streaming call here.
  StreamOutcome out;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  auto reader = stub.Generate(&context, GreedyRequest("Once upon a time", 8));
  v1::GenerateResponse response;
  while (reader->Read(&response)) out.chunks.push_back(response);
  out.status = reader->Finish();
  return out;
}

// The final status of a reflection call (list_services) on `channel`.
grpc::Status ReflectionStatus(const std::shared_ptr<grpc::Channel>& channel, const std::string& authorization = "") {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  auto call = stub.PrepareCall(&context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  grpc::Slice slice(std::string("\x3A\x00", 2));  // ServerReflectionRequest{list_services: ""}
  grpc::ByteBuffer request(&slice, 1);
  call->WriteLast(request, grpc::WriteOptions(), reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  while (cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) != 4) {
  }
  return status;
}

// medusa-server with `args`, expected to refuse to start: its exit code and its output.
struct Refusal {
  std::optional<int> exit_code;
  std::string log;
};
Refusal StartExpectingRefusal(const std::vector<std::string>& args) {
  TempDir dir;
  ServerProcess server;
  server.Start(args, dir);
  Refusal r;
  r.exit_code = server.WaitExit(absl::Seconds(30));
  r.log = server.Log();
  return r;
}

class ServerSecurityTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_MODEL_PRESENT(kStoriesModel); }
  TempDir dir_;
  ServerProcess server_;
};

TEST_F(ServerSecurityTest, TlsServesClientsThatTrustItsCaAndRefusesPlaintext) {
  Certificates certs(dir_);
  server_.set_channel_credentials(certs.Channel("ca"));
  server_.Start(
      Plus(StoriesArgs(), {"--tls-cert-file=" + certs.pem("server"), "--tls-key-file=" + certs.key("server")}), dir_);
  ASSERT_TRUE(server_.WaitServing());

  StreamOutcome out = RunGenerate(*server_.Stub(), GreedyRequest("Once upon a time", 16));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_TRUE(out.finished());
  EXPECT_EQ(out.finish().usage().generated_tokens(), 16);
  EXPECT_FALSE(out.text().empty());

  // Plaintext to the TLS port, and TLS trusting another CA, never get through.
  EXPECT_EQ(ModelInfoStatus(*StubWith(server_, grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ModelInfoStatus(*StubWith(server_, certs.Channel("other_ca"))).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The server kept serving.
  EXPECT_TRUE(ModelInfoStatus(*server_.Stub()).ok());
  EXPECT_TRUE(absl::StrContains(server_.Log(), "TLS")) << server_.Log();
}

TEST_F(ServerSecurityTest, MutualTlsNeedsAClientCertificateFromItsCa) {
  Certificates certs(dir_);
  server_.set_channel_credentials(certs.Channel("ca", "client"));
  server_.Start(Plus(StoriesArgs(), {"--tls-cert-file=" + certs.pem("server"), "--tls-key-file=" + certs.key("server"),
                                     "--tls-client-ca-file=" + certs.pem("ca")}),
                dir_);
  ASSERT_TRUE(server_.WaitServing());
  EXPECT_TRUE(ModelInfoStatus(*server_.Stub()).ok());
  StreamOutcome out = RunGenerate(*server_.Stub(), GreedyRequest("Once upon a time", 8));
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();

  EXPECT_EQ(ModelInfoStatus(*StubWith(server_, certs.Channel("ca"))).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ModelInfoStatus(*StubWith(server_, certs.Channel("ca", "stranger"))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(ModelInfoStatus(*server_.Stub()).ok());
}

TEST_F(ServerSecurityTest, BadTlsFilesAndFlagsFailAtStartUpWithExitCodeTwo) {
  Certificates certs(dir_);
  const std::string garbage = dir_.file("garbage.pem");
  WriteText(garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
  const std::string cert = "--tls-cert-file=" + certs.pem("server"), key = "--tls-key-file=" + certs.key("server");
  struct Case {
    std::vector<std::string> flags;
    std::string message;  // what the error must name
  };
  const std::vector<Case> cases = {
      {{cert}, "--tls-key-file go together"},
      {{key}, "--tls-key-file go together"},
      {{"--tls-client-ca-file=" + certs.pem("ca")}, "--tls-client-ca-file needs"},
      {{"--tls-cert-file=" + dir_.file("missing.pem"), key}, "missing.pem"},
      {{cert, "--tls-key-file=" + certs.key("client")}, "does not match the certificate"},
      {{"--tls-cert-file=" + garbage, key}, "no PEM certificate"},
      {{cert, "--tls-key-file=" + certs.pem("server")}, "not an unencrypted PEM private key"},
      {{cert, key, "--tls-client-ca-file=" + garbage}, "--tls-client-ca-file"},
      {{"--tls-cert-file=" + dir_.file(""), key}, "not a regular file"},
      {{cert, "--tls-key-file=/dev/zero"}, "not a regular file"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.flags, " "));
    const Refusal r = StartExpectingRefusal(Plus(StoriesArgs(), c.flags));
    EXPECT_EQ(r.exit_code, 2) << r.log;
    EXPECT_TRUE(absl::StrContains(r.log, c.message)) << r.log;
  }
}

TEST_F(ServerSecurityTest, BearerTokenGuardsEveryServiceButHealth) {
  const std::string token_file = dir_.file("token");
  WriteText(token_file, std::string(kToken) + "\n");  // the trailing newline is not part of it
  server_.Start(Plus(StoriesArgs(), {"--auth-token-file=" + token_file, "--enable-reflection"}), dir_);
  ASSERT_TRUE(server_.WaitServing());  // health answers without a token
  EXPECT_EQ(server_.Health(""), HealthCheckResponse::SERVING);

  auto stub = server_.Stub();
  const std::string good = absl::StrCat("Bearer ", kToken);
  EXPECT_TRUE(ModelInfoStatus(*stub, good).ok());
  EXPECT_TRUE(ModelInfoStatus(*stub, absl::StrCat("bearer ", kToken)).ok());  // the scheme is case-insensitive
  EXPECT_TRUE(TokenizeStatus(*stub, good).ok());
  StreamOutcome out = GenerateWith(*stub, good);
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_TRUE(out.finished());
  EXPECT_TRUE(ReflectionStatus(server_.Channel(), good).ok());

  const std::string token(kToken);
  for (const std::string& wrong :
       std::vector<std::string>{std::string(""), token, "Basic " + token, "Bearer", "Bearer ", "Bearer " + token + "x",
                                "Bearer " + token.substr(0, token.size() - 1), "Bearer  " + token}) {
    SCOPED_TRACE("authorization: " + wrong);
    EXPECT_EQ(ModelInfoStatus(*stub, wrong).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(TokenizeStatus(*stub, wrong).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    StreamOutcome refused = GenerateWith(*stub, wrong);
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(refused.chunks.empty());
    EXPECT_EQ(ReflectionStatus(server_.Channel(), wrong).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Two authorization entries, one of them right: ambiguous, refused.
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", good);
    context.AddMetadata("authorization", "Bearer nope");
    v1::ModelInfo info;
    EXPECT_EQ(stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_TRUE(ModelInfoStatus(*stub, good).ok());  // still serving
  EXPECT_FALSE(absl::StrContains(server_.Log(), kToken)) << "the token was logged";
  EXPECT_TRUE(absl::StrContains(server_.Log(), "bearer token")) << server_.Log();
}

TEST_F(ServerSecurityTest, BadTokenFilesFailAtStartUpWithExitCodeTwo) {
  WriteText(dir_.file("empty"), "");
  WriteText(dir_.file("newline"), "\n\r\n");
  WriteText(dir_.file("space"), "two words\n");
  WriteText(dir_.file("big"), std::string(5000, 'a'));
  ASSERT_EQ(mkfifo(dir_.file("fifo").c_str(), 0600), 0);
  struct Case {
    std::string path, message;
  };
  for (const Case& c : std::vector<Case>{{dir_.file("empty"), "empty"},
                                         {dir_.file("newline"), "empty token"},
                                         {dir_.file("space"), "printable ASCII without spaces"},
                                         {dir_.file("big"), "more than the limit of 4096 bytes"},
                                         {dir_.file("fifo"), "not a regular file"},
                                         {dir_.file(""), "not a regular file"},
                                         {"/dev/zero", "not a regular file"},
                                         {dir_.file("missing"), "No such file"}}) {
    SCOPED_TRACE(c.path);
    const Refusal r = StartExpectingRefusal(Plus(StoriesArgs(), {"--auth-token-file=" + c.path}));
    EXPECT_EQ(r.exit_code, 2) << r.log;
    EXPECT_TRUE(absl::StrContains(r.log, "--auth-token-file")) << r.log;
    EXPECT_TRUE(absl::StrContains(r.log, c.message)) << r.log;
  }
}

TEST_F(ServerSecurityTest, ReflectionAndFilePathsAreOffByDefault) {
  const std::string heads = dir_.file("heads.safetensors");
  WriteRandomHeads(kStoriesModel, heads);
  server_.Start(Plus(StoriesArgs(), {"--heads=" + heads}), dir_);
  ASSERT_TRUE(server_.WaitServing());
  EXPECT_EQ(ReflectionStatus(server_.Channel()).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  grpc::ClientContext context;
  v1::ModelInfo info;
  ASSERT_TRUE(server_.Stub()->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_GT(info.heads().num_heads(), 0);
  EXPECT_EQ(info.heads().path(), "");
  EXPECT_FALSE(absl::StrContains(info.DebugString(), dir_.file(""))) << info.DebugString();
}

TEST_F(ServerSecurityTest, NonLoopbackHostNeedsTlsOrATokenOrAllowInsecure) {
  for (const std::string& host : {"0.0.0.0", "::", "10.1.2.3", "example.com"}) {
    SCOPED_TRACE(host);
    const Refusal r = StartExpectingRefusal(Plus(StoriesArgs(), {"--host=" + host}));
    EXPECT_EQ(r.exit_code, 2) << r.log;
    EXPECT_TRUE(absl::StrContains(r.log, "not a loopback address")) << r.log;
    EXPECT_TRUE(absl::StrContains(r.log, "--allow-insecure")) << r.log;
  }
  // Loopback names and addresses need nothing; 0.0.0.0 serves with a token or when allowed.
  const std::string token_file = dir_.file("token");
  WriteText(token_file, kToken);
  for (const std::vector<std::string>& flags :
       std::vector<std::vector<std::string>>{{"--host=localhost"},
                                             {"--host=127.0.0.2"},
                                             {"--host=0.0.0.0", "--allow-insecure"},
                                             {"--host=0.0.0.0", "--auth-token-file=" + token_file}}) {
    SCOPED_TRACE(absl::StrJoin(flags, " "));
    TempDir dir;
    ServerProcess server;
    server.Start(Plus(StoriesArgs(), flags), dir);
    const absl::Time end = absl::Now() + absl::Seconds(30);
    while (absl::Now() < end && !absl::StrContains(server.Log(), "listening on")) {
      ASSERT_FALSE(server.WaitExit(absl::Milliseconds(20)).has_value()) << server.Log();
    }
    EXPECT_TRUE(absl::StrContains(server.Log(), "listening on")) << server.Log();
    server.Signal(SIGTERM);
    EXPECT_EQ(server.WaitExit(absl::Seconds(30)), 0) << server.Log();
  }
}

TEST_F(ServerSecurityTest, ATakenPortIsAnErrorNotASharedListener) {
  // gRPC's default SO_REUSEPORT would let a second server bind the port and take half of the
  // first one's connections; the second must fail instead, and the first serve on alone.
  server_.Start(StoriesArgs(), dir_);
  ASSERT_TRUE(server_.WaitServing());
  TempDir dir;
  ServerProcess second;
  second.Start(Plus(StoriesArgs(),
                    {absl::StrCat("--port=", server_.port()), absl::StrCat("--metrics-port=", second.metrics_port())}),
               dir, {}, /*pass_ports=*/false);
  EXPECT_EQ(second.WaitExit(absl::Seconds(30)), 1) << second.Log();
  EXPECT_TRUE(absl::StrContains(second.Log(), absl::StrCat("cannot listen on 127.0.0.1:", server_.port())))
      << second.Log();
  EXPECT_EQ(server_.Health(""), HealthCheckResponse::SERVING);
}

TEST_F(ServerSecurityTest, AbsurdConnectionFlagsFailAtStartUp) {
  for (const std::string& flag :
       {"--keepalive-time-seconds=-1", "--keepalive-timeout-seconds=nan", "--max-connection-age-seconds=1e300",
        "--handshake-timeout-seconds=inf", "--max-connection-idle-seconds=-0.5", "--max-metadata-bytes=10",
        "--max-metadata-bytes=2147483647", "--min-client-ping-interval-seconds=3000000", "--max-connections=-1",
        "--max-connections=1000000"}) {
    SCOPED_TRACE(flag);
    const Refusal r = StartExpectingRefusal(Plus(StoriesArgs(), {flag}));
    EXPECT_EQ(r.exit_code, 2) << r.log;
    const std::string name = flag.substr(0, flag.find('='));
    EXPECT_TRUE(absl::StrContains(r.log, name)) << r.log;
  }
}

TEST_F(ServerSecurityTest, OversizedMetadataIsRefusedAndTheServerGoesOn) {
  server_.Start(Plus(StoriesArgs(), {"--max-metadata-bytes=2048"}), dir_);
  ASSERT_TRUE(server_.WaitServing());
  auto stub = server_.Stub();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  context.AddMetadata("x-padding", std::string(8000, 'p'));
  v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_TRUE(ModelInfoStatus(*server_.StubOnNewConnection()).ok());
}

TEST_F(ServerSecurityTest, MetricsAnswerWhileConnectionsStall) {
  server_.Start(StoriesArgs(), dir_);
  ASSERT_TRUE(server_.WaitServing());
  // Clients that connect and send nothing hold civetweb workers; with one worker (as
  // before) the scrape below would wait for the request timeout.
  std::vector<int> stalled;
  for (int i = 0; i < 2; ++i) {
    stalled.push_back(OpenIdleConnection(server_.metrics_port()));
    ASSERT_GE(stalled.back(), 0);
  }
  absl::SleepFor(absl::Milliseconds(200));  // let the workers pick the stalled connections up
  const absl::Time start = absl::Now();
  std::optional<std::string> scrape = HttpGet(server_.metrics_port(), "/metrics", absl::Seconds(5));
  ASSERT_TRUE(scrape.has_value());
  EXPECT_TRUE(absl::StrContains(*scrape, "medusa_requests_running"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  for (int fd : stalled) close(fd);
}

TEST_F(ServerSecurityTest, MetricsListenOnTheirOwnHost) {
  server_.Start(Plus(StoriesArgs(), {"--metrics-host=127.0.0.3"}), dir_);
  ASSERT_TRUE(server_.WaitServing());
  EXPECT_FALSE(HttpGet(server_.metrics_port(), "/metrics", absl::Seconds(5)).has_value());  // not on 127.0.0.1
  EXPECT_TRUE(absl::StrContains(server_.Log(), absl::StrCat("127.0.0.3:", server_.metrics_port()))) << server_.Log();
}

TEST_F(ServerSecurityTest, SigtermWhileTheModelLoadsEndsTheProcessPromptly) {
  ASSERT_MODEL_PRESENT(kSmolModel);
  // SmolLM2 with random heads: listening comes before loading, which takes long enough to
  // signal in the middle of.
  server_.Start(SmolWithRandomHeadsArgs(dir_.file("heads.safetensors")), dir_);
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while (absl::Now() < end && !Accepts(server_.port())) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(Accepts(server_.port())) << server_.Log();
  server_.Signal(SIGTERM);
  const absl::Time signalled = absl::Now();
  EXPECT_EQ(server_.WaitExit(absl::Seconds(5)), 0) << server_.Log();
  EXPECT_LT(absl::Now() - signalled, absl::Seconds(2));
  EXPECT_TRUE(absl::StrContains(server_.Log(), "while loading the model")) << server_.Log();
  EXPECT_FALSE(absl::StrContains(server_.Log(), "serving ")) << server_.Log();
}

TEST_F(ServerSecurityTest, LivenessServesWhileTheModelLoadsAndTheGeneratorDoesNot) {
  ASSERT_MODEL_PRESENT(kSmolModel);
  // What Kubernetes' probes ask: liveness (medusa.v1.Liveness) must pass during a long load,
  // or the kubelet restarts a server that is only loading; readiness (medusa.v1.Generator)
  // must not, or the Service sends it calls it cannot take.
  server_.Start(SmolSlowToLoadArgs(dir_.file("heads.safetensors")), dir_);
  std::optional<HealthCheckResponse::ServingStatus> liveness;
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while (absl::Now() < end && liveness != HealthCheckResponse::SERVING) {
    liveness = ProbeHealth(server_.target(), "medusa.v1.Liveness");
  }
  ASSERT_EQ(liveness, HealthCheckResponse::SERVING) << server_.Log();
  const std::optional<HealthCheckResponse::ServingStatus> generator =
      ProbeHealth(server_.target(), "medusa.v1.Generator");
  const std::optional<HealthCheckResponse::ServingStatus> whole = ProbeHealth(server_.target(), "");
  // Still loading after both reads (the log says "serving " once loaded and warmed up).
  ASSERT_FALSE(absl::StrContains(server_.Log(), "serving ")) << "loaded before the checks: " << server_.Log();
  EXPECT_EQ(generator, HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(whole, HealthCheckResponse::NOT_SERVING);

  ASSERT_TRUE(server_.WaitServing());
  EXPECT_EQ(ProbeHealth(server_.target(), "medusa.v1.Liveness"), HealthCheckResponse::SERVING);
  EXPECT_EQ(ProbeHealth(server_.target(), "medusa.v1.Generator"), HealthCheckResponse::SERVING);
  // A name the server does not have fails the call (NOT_FOUND): a misspelt probe never passes.
  EXPECT_EQ(ProbeHealth(server_.target(), "medusa.v1.NoSuchService"), std::nullopt);
}

TEST_F(ServerSecurityTest, AHealthPortAnswersPlaintextProbesBesideTls) {
  ASSERT_MODEL_PRESENT(kSmolModel);
  // Kubernetes' gRPC probes speak no TLS: with TLS on --port they ask --health-port, which
  // serves the same statuses in plaintext, and nothing but health.
  Certificates certs(dir_);
  const int health_port = FreePort();
  const std::string health = absl::StrCat("ipv4:127.0.0.1:", health_port);
  server_.set_channel_credentials(certs.Channel("ca"));
  server_.Start(Plus(SmolSlowToLoadArgs(dir_.file("heads.safetensors")),
                     {"--tls-cert-file=" + certs.pem("server"), "--tls-key-file=" + certs.key("server"),
                      absl::StrCat("--health-port=", health_port)}),
                dir_);
  std::optional<HealthCheckResponse::ServingStatus> liveness;
  const absl::Time end = absl::Now() + absl::Seconds(30);
  while (absl::Now() < end && liveness != HealthCheckResponse::SERVING)
    liveness = ProbeHealth(health, "medusa.v1.Liveness");
  ASSERT_EQ(liveness, HealthCheckResponse::SERVING) << server_.Log();
  const std::optional<HealthCheckResponse::ServingStatus> loading = ProbeHealth(health, "medusa.v1.Generator");
  const std::optional<HealthCheckResponse::ServingStatus> plaintext_on_tls = ProbeHealth(server_.target(), "");
  ASSERT_FALSE(absl::StrContains(server_.Log(), "serving ")) << "loaded before the checks: " << server_.Log();
  EXPECT_EQ(loading, HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(plaintext_on_tls, std::nullopt);  // the TLS port refuses a plaintext probe
  EXPECT_TRUE(absl::StrContains(server_.Log(), absl::StrCat("127.0.0.1:", health_port, " (health only, plaintext)")))
      << server_.Log();

  ASSERT_TRUE(server_.WaitServing());  // over TLS
  EXPECT_EQ(ProbeHealth(health, "medusa.v1.Generator"), HealthCheckResponse::SERVING);
  EXPECT_EQ(ProbeHealth(health, "medusa.v1.Liveness"), HealthCheckResponse::SERVING);
  // Health only: the Generator is not served there, in plaintext or otherwise.
  auto plaintext = v1::Generator::NewStub(grpc::CreateChannel(health, grpc::InsecureChannelCredentials()));
  StreamOutcome out = RunGenerate(*plaintext, GreedyRequest("Once upon a time", 2));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << out.status.error_message();
  EXPECT_TRUE(RunGenerate(*server_.Stub(), GreedyRequest("Once upon a time", 2)).status.ok());

  server_.Signal(SIGTERM);
  EXPECT_EQ(server_.WaitExit(absl::Seconds(30)), 0) << server_.Log();
  EXPECT_FALSE(Accepts(health_port));  // closed with the rest
}

TEST_F(ServerSecurityTest, AHealthPortThatIsTakenIsAnError) {
  server_.Start(Plus(StoriesArgs(), {absl::StrCat("--health-port=", server_.port())}), dir_);
  EXPECT_EQ(server_.WaitExit(absl::Seconds(30)), 1) << server_.Log();
  EXPECT_TRUE(absl::StrContains(server_.Log(), "in use?")) << server_.Log();
}

// Whether the server closed this raw connection within `timeout`. What it sends first
// (gRPC's SETTINGS frame, a GOAWAY) is read and dropped.
bool ClosedByServer(int fd, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buffer[4096];
  for (;;) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
    if (n < 0) return false;  // the timeout
  }
}

TEST_F(ServerSecurityTest, MaxConnectionsRefusesOneMoreUntilOneCloses) {
  server_.Start(Plus(StoriesArgs(), {"--max-connections=2"}), dir_);
  ASSERT_TRUE(server_.WaitServing());  // its channel is connection 1
  auto second = server_.StubOnNewConnection();
  ASSERT_TRUE(ModelInfoStatus(*second).ok());
  // Connection 3 is closed as soon as it is accepted: UNAVAILABLE, the first two go on.
  {
    auto third = server_.StubOnNewConnection();
    EXPECT_EQ(ModelInfoStatus(*third).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_TRUE(ModelInfoStatus(*server_.Stub()).ok());
  StreamOutcome out = RunGenerate(*second, GreedyRequest("Once upon a time", 8));
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  // Closing connection 2 frees its place.
  second.reset();
  bool admitted = false;
  for (int i = 0; i < 50 && !admitted; ++i) {
    admitted = ModelInfoStatus(*server_.StubOnNewConnection()).ok();
    if (!admitted) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(admitted) << server_.Log();
  // A graceful exit closes the gate too (and removes its socket's directory).
  server_.Signal(SIGTERM);
  EXPECT_EQ(server_.WaitExit(absl::Seconds(30)), 0) << server_.Log();
}

TEST_F(ServerSecurityTest, AConnectionThatNeverHandshakesIsClosedAndFreesItsPlace) {
  for (const bool gated : {false, true}) {
    SCOPED_TRACE(gated ? "with --max-connections=1" : "without a connection limit");
    TempDir dir;
    ServerProcess server;
    std::vector<std::string> flags = {"--handshake-timeout-seconds=1"};
    if (gated) flags.push_back("--max-connections=1");
    server.Start(Plus(StoriesArgs(), flags), dir);
    // Served, told by the log: the helper's health channel would hold the one place.
    const absl::Time end = absl::Now() + absl::Seconds(60);
    while (absl::Now() < end && !absl::StrContains(server.Log(), "serving ")) absl::SleepFor(absl::Milliseconds(20));
    const int idle = OpenIdleConnection(server.port());
    ASSERT_GE(idle, 0);
    const absl::Time opened = absl::Now();
    if (gated) {
      // The idle connection holds the only place.
      EXPECT_EQ(ModelInfoStatus(*server.StubOnNewConnection()).error_code(), grpc::StatusCode::UNAVAILABLE);
    }
    EXPECT_TRUE(ClosedByServer(idle, absl::Seconds(10)));
    EXPECT_LT(absl::Now() - opened, absl::Seconds(5));
    close(idle);
    bool served = false;
    for (int i = 0; i < 50 && !served; ++i) {
      served = ModelInfoStatus(*server.StubOnNewConnection()).ok();
      if (!served) absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_TRUE(served) << server.Log();
    server.Signal(SIGTERM);
    EXPECT_EQ(server.WaitExit(absl::Seconds(30)), 0) << server.Log();
  }
}

TEST_F(ServerSecurityTest, KeepaliveDropsAPeerThatStopsAnsweringPings) {
  // Pinged after 1 s without activity, dropped when a ping goes 1 s unanswered; the handshake
  // timeout is far away, so only keepalive can close the silent peer this soon.
  server_.Start(Plus(StoriesArgs(),
                     {"--keepalive-time-seconds=1", "--keepalive-timeout-seconds=1", "--handshake-timeout-seconds=60"}),
                dir_);
  ASSERT_TRUE(server_.WaitServing());
  std::optional<RawHttp2Peer> silent = RawHttp2Peer::Connect(server_.port());
  std::optional<RawHttp2Peer> answering = RawHttp2Peer::Connect(server_.port());
  ASSERT_TRUE(silent.has_value() && answering.has_value());
  Http2PeerOutcome answered;
  std::thread answer([&] { answered = answering->Run(absl::Seconds(8), /*answer_pings=*/true); });
  const Http2PeerOutcome ignored = silent->Run(absl::Seconds(15), /*answer_pings=*/false);
  answer.join();

  EXPECT_GE(ignored.pings, 1);
  ASSERT_TRUE(ignored.closed_after.has_value()) << "the silent peer was never dropped";
  EXPECT_GE(*ignored.closed_after, absl::Seconds(1.5));  // not before a ping could go unanswered
  EXPECT_LT(*ignored.closed_after, absl::Seconds(8));
  // The peer that answers is pinged again and again and kept.
  EXPECT_GE(answered.pings, 3);
  EXPECT_FALSE(answered.closed_after.has_value()) << absl::FormatDuration(*answered.closed_after);
  EXPECT_FALSE(answered.goaway);
  EXPECT_TRUE(ModelInfoStatus(*server_.StubOnNewConnection()).ok());
}

TEST_F(ServerSecurityTest, AnOldConnectionIsRetiredAndTheClientReconnects) {
  server_.Start(Plus(StoriesArgs(), {"--max-connection-age-seconds=0.5", "--max-connection-age-grace-seconds=5"}),
                dir_);
  ASSERT_TRUE(server_.WaitServing());
  auto channel = server_.Channel();
  auto stub = v1::Generator::NewStub(channel);
  int calls = 0, failed = 0;
  bool left_ready = false;
  const absl::Time end = absl::Now() + absl::Seconds(3);
  while (absl::Now() < end) {
    failed += ModelInfoStatus(*stub).ok() ? 0 : 1;
    ++calls;
    for (int i = 0; i < 5; ++i) {
      left_ready |= channel->GetState(false) != GRPC_CHANNEL_READY;
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  EXPECT_GT(calls, 20);
  EXPECT_EQ(failed, 0);     // GOAWAY is transparent: no call failed
  EXPECT_TRUE(left_ready);  // but the connection was retired (and a new one made)
  // A stream running past the age finishes within the grace period.
  StreamOutcome out = RunGenerate(*stub, GreedyRequest("Once upon a time", 200));
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
}

TEST_F(ServerSecurityTest, ClientBenchAndHealthSpeakTlsWithAClientCertificateAndToken) {
  Certificates certs(dir_);
  const std::string token_file = dir_.file("token");
  WriteText(token_file, std::string(kToken) + "\n");
  server_.set_channel_credentials(certs.Channel("ca", "client"));
  server_.Start(Plus(StoriesArgs(), {"--tls-cert-file=" + certs.pem("server"), "--tls-key-file=" + certs.key("server"),
                                     "--tls-client-ca-file=" + certs.pem("ca"), "--auth-token-file=" + token_file,
                                     // through the connection gate: TLS and the token still checked
                                     "--max-connections=8"}),
                dir_);
  ASSERT_TRUE(server_.WaitServing());
  const std::string medusa = BinaryPath("bin/medusa");
  const std::string tls =
      absl::StrCat(" --addr localhost:", server_.port(), " --tls-ca-file ", certs.pem("ca"), " --tls-cert-file ",
                   certs.pem("client"), " --tls-key-file ", certs.key("client"));
  const std::string token = " --auth-token-file " + token_file;

  nlohmann::json answer =
      RunJsonCommand(absl::StrCat(medusa, " client --json", tls, token, " --prompt 'Once upon a time' --max-tokens 8"));
  ASSERT_TRUE(answer.is_object());
  EXPECT_EQ(answer["new_tokens"], 8);

  const std::string prompts = dir_.file("prompts.jsonl");
  WriteText(prompts, "{\"prompt\": \"Once upon a time\"}\n{\"prompt\": \"The little dog\"}\n");
  nlohmann::json bench = RunJsonCommand(
      absl::StrCat(medusa, " bench --json", tls, token, " --prompts ", prompts, " --concurrency 2 --max-tokens 8"));
  ASSERT_TRUE(bench.is_object());
  EXPECT_EQ(bench["errors"], 0);
  EXPECT_EQ(bench["requests"], 2);

  // medusa health speaks the same mutual TLS (health needs no token); plaintext to the TLS port fails.
  CommandOutput health = RunCommand(absl::StrCat(medusa, " health", tls, " --service medusa.v1.Generator"));
  EXPECT_EQ(health.exit_code, 0) << health.output;
  EXPECT_TRUE(absl::StrContains(health.output, "SERVING")) << health.output;
  CommandOutput plaintext_health = RunCommand(absl::StrCat(medusa, " health --addr localhost:", server_.port()));
  EXPECT_EQ(plaintext_health.exit_code, 1) << plaintext_health.output;

  // Without the token, without TLS, with a bad CA file: a clear failure each.
  CommandOutput no_token = RunCommand(absl::StrCat(medusa, " client", tls, " --prompt hi --max-tokens 2"));
  EXPECT_NE(no_token.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(no_token.output, "bearer token")) << no_token.output;
  CommandOutput plaintext = RunCommand(
      absl::StrCat(medusa, " client --addr localhost:", server_.port(), token, " --prompt hi --max-tokens 2"));
  EXPECT_NE(plaintext.exit_code, 0);
  CommandOutput bad_ca = RunCommand(absl::StrCat(medusa, " client --addr localhost:", server_.port(),
                                                 " --tls-ca-file /dev/zero", token, " --prompt hi"));
  EXPECT_NE(bad_ca.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(bad_ca.output, "--tls-ca-file")) << bad_ca.output;
  CommandOutput half_pair =
      RunCommand(absl::StrCat(medusa, " client --addr localhost:", server_.port(), " --tls-ca-file ", certs.pem("ca"),
                              " --tls-cert-file ", certs.pem("client"), " --prompt hi"));
  EXPECT_NE(half_pair.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(half_pair.output, "go together")) << half_pair.output;
  server_.Signal(SIGTERM);
  EXPECT_EQ(server_.WaitExit(absl::Seconds(30)), 0) << server_.Log();
}

TEST_F(ServerSecurityTest, RoundRobinSpreadsCallsOverEveryResolvedAddress) {
  // What a headless Kubernetes Service gives a client: one name, several pod addresses. Here two
  // servers behind one ipv4: target with two addresses; round_robin must use both, pick_first one.
  TempDir second_dir;  // outlives the process writing its log there
  ServerProcess second;
  server_.Start(StoriesArgs(), dir_);
  second.Start(StoriesArgs(), second_dir);
  ASSERT_TRUE(server_.WaitServing());
  ASSERT_TRUE(second.WaitServing());
  const std::string medusa = BinaryPath("bin/medusa");
  const std::string prompts = dir_.file("prompts.jsonl");
  WriteText(prompts, "{\"prompt\": \"Once upon a time\"}\n");
  const std::string both = absl::StrCat("ipv4:", server_.address(), ",", second.address());
  auto generated = [](ServerProcess& s) { return s.Metric("medusa_generated_tokens_total").value_or(0); };

  nlohmann::json first = RunJsonCommand(absl::StrCat(medusa, " bench --json --addr ", both, " --prompts ", prompts,
                                                     " --requests 8 --concurrency 1 --max-tokens 4"));
  ASSERT_TRUE(first.is_object());
  EXPECT_EQ(first["errors"], 0);
  // pick_first (the default): every call went to one server.
  EXPECT_TRUE((generated(server_) == 0) != (generated(second) == 0))
      << generated(server_) << " and " << generated(second);
  const double before_first = generated(server_), before_second = generated(second);

  nlohmann::json spread =
      RunJsonCommand(absl::StrCat(medusa, " bench --json --lb-policy round_robin --addr ", both, " --prompts ", prompts,
                                  " --requests 8 --concurrency 1 --max-tokens 4"));
  ASSERT_TRUE(spread.is_object());
  EXPECT_EQ(spread["errors"], 0);
  EXPECT_GT(generated(server_), before_first);
  EXPECT_GT(generated(second), before_second);

  // The form the deployment guide gives: a dns:/// target (localhost may also resolve to ::1,
  // where nothing listens: round_robin uses the address that answers).
  nlohmann::json dns = RunJsonCommand(
      absl::StrCat(medusa, " client --json --lb-policy round_robin --addr dns:///localhost:", server_.port(),
                   " --prompt 'Once upon a time' --max-tokens 4"));
  ASSERT_TRUE(dns.is_object());
  EXPECT_EQ(dns["new_tokens"], 4);

  CommandOutput bad = RunCommand(
      absl::StrCat(medusa, " client --lb-policy random --addr ", server_.address(), " --prompt hi --max-tokens 2"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(bad.output, "--lb-policy")) << bad.output;
}

}  // namespace
}  // namespace medusa::testing
