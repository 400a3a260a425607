// `medusa health` against a real medusa-server (stories260K) on loopback: exit 0 and SERVING for
// the server and for medusa.v1.Generator (health stays open when the server asks for a token);
// exit 1 with the reason for an unknown service, for a port where nothing listens and for a
// listener that never answers (within --timeout-seconds); exit 2 for a timeout out of range.

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/commands.h"
#include "tests/support/loopback.h"
#include "tests/support/server_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_models.h"

namespace medusa::testing {
namespace {

std::string Health(const std::string& args) { return BinaryPath("bin/medusa") + " health " + args; }

TEST(ServerHealthCliTest, ExitsZeroOnlyWhenTheServiceIsServing) {
  ASSERT_MODEL_PRESENT(kStoriesModel);
  TempDir dir;
  const std::string token_file = dir.file("token");
  std::ofstream(token_file) << "health-cli-test-token\n";
  ServerProcess server;
  server.Start({"--model=" + kStoriesModel, "--threads=1", "--kv-cache-mb=16", "--auth-token-file=" + token_file}, dir);
  ASSERT_TRUE(server.WaitServing());
  const std::string addr = absl::StrCat(" --addr 127.0.0.1:", server.port());

  // Health needs no token (orchestrators' probes carry none); sending one does no harm.
  for (const std::string& extra :
       {std::string(), std::string(" --service medusa.v1.Generator"), " --auth-token-file " + token_file}) {
    const CommandOutput ok = RunCommand(Health(addr + extra));
    EXPECT_EQ(ok.exit_code, 0) << extra << ": " << ok.output;
    EXPECT_TRUE(absl::StrContains(ok.output, "SERVING")) << ok.output;
  }

  const CommandOutput unknown = RunCommand(Health(addr + " --service no.such.Service"));
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_TRUE(absl::StrContains(unknown.output, "no.such.Service")) << unknown.output;
  EXPECT_FALSE(absl::StrContains(unknown.output, "\nSERVING")) << unknown.output;

  // Once the server has drained and exited, nothing listens on its port.
  server.Signal(SIGTERM);
  ASSERT_EQ(server.WaitExit(absl::Seconds(30)), 0) << server.Log();
  const CommandOutput gone = RunCommand(Health(addr));
  EXPECT_EQ(gone.exit_code, 1) << gone.output;
  EXPECT_TRUE(absl::StrContains(gone.output, absl::StrCat("127.0.0.1:", server.port()))) << gone.output;
}

TEST(ServerHealthCliTest, NothingListeningOrNoAnswerFails) {
  const CommandOutput refused = RunCommand(Health(absl::StrCat("--addr 127.0.0.1:", FreePort())));
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_TRUE(absl::StrContains(refused.output, "health of 127.0.0.1:")) << refused.output;

  // A listener that accepts connections (the kernel's backlog) but never speaks HTTP/2.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const absl::Time start = absl::Now();
  const CommandOutput silent =
      RunCommand(Health(absl::StrCat("--timeout-seconds 1 --addr 127.0.0.1:", ntohs(address.sin_port))));
  close(fd);
  EXPECT_EQ(silent.exit_code, 1) << silent.output;
  EXPECT_TRUE(absl::StrContains(silent.output, "Deadline")) << silent.output;
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << "--timeout-seconds bounds the check";
}

TEST(ServerHealthCliTest, TimeoutOutOfRangeIsAFlagError) {
  for (const char* bad : {"0", "-1", "3601", "nan"}) {
    const CommandOutput out = RunCommand(Health(std::string("--addr 127.0.0.1:1 --timeout-seconds ") + bad));
    EXPECT_EQ(out.exit_code, 2) << bad << ": " << out.output;
    EXPECT_TRUE(absl::StrContains(out.output, "--timeout-seconds")) << out.output;
  }
}

}  // namespace
}  // namespace medusa::testing
