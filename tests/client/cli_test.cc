// End-to-end tests of the `ringq` CLI (client/cli): the built binary run as
// a subprocess against the real ringqd, over gRPC and over RQP, checking its
// output (text and --json) and its documented exit codes. Each opens with
// its goal.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/cpp/options.h"
#include "tests/support/server_process.h"

namespace ringq {
namespace {

using namespace std::chrono_literals;
using client::Protocol;

struct Result {
  int exit_code = -1;  // 128 + signal when killed, -1 on timeout
  std::string out;
  std::string err;
  std::vector<std::string> lines() const {
    std::vector<std::string> v;
    std::istringstream in(out);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A ringq process with its stdin from a file and stdout/stderr to files.
class CliProcess {
 public:
  CliProcess(const std::string& dir, std::vector<std::string> args, const std::string& input)
      : dir_(dir + "/" + std::to_string(next_++)) {  // fresh files per process
    { std::ofstream(dir_ + ".in") << input; }
    // Everything the child needs is prepared before fork.
    std::string bin = RINGQ_PATH;
    const std::string in_path = dir_ + ".in", out_path = dir_ + ".out", err_path = dir_ + ".err";
    std::vector<char*> argv;
    argv.push_back(bin.data());
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(open(in_path.c_str(), O_RDONLY), 0);
      dup2(open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 1);
      dup2(open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
      unsetenv("RINGQ_SERVER");
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
  }
  ~CliProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  void Signal(int sig) { kill(pid_, sig); }
  std::string Out() const { return ReadFile(dir_ + ".out"); }
  // Waits at most `timeout` for the exit; kills it after that.
  Result Wait(std::chrono::milliseconds timeout) {
    Result r;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        pid_ = -1;
        r.out = Out();
        r.err = ReadFile(dir_ + ".err") + "\n(killed after the test's timeout)";
        return r;
      }
      std::this_thread::sleep_for(5ms);
    }
    pid_ = -1;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = Out();
    r.err = ReadFile(dir_ + ".err");
    return r;
  }

 private:
  static inline int next_ = 0;
  std::string dir_;  // path prefix of this process' files
  pid_t pid_ = -1;
};

std::string Name(const ::testing::TestParamInfo<Protocol>& info) {
  return info.param == Protocol::kGrpc ? "grpc" : "rqp";
}

// A JSON line's unsigned number field (the CLI writes numbers bare).
uint64_t JsonNum(const std::string& line, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(line, m, std::regex("\"" + key + "\":([0-9]+)"))) return UINT64_MAX;
  return std::stoull(m[1].str());
}

class CliTest : public ::testing::TestWithParam<Protocol> {
 protected:
  void SetUp() override {
    server_ = std::make_unique<testing::ServerProcess>(RINGQD_PATH,
                                                       std::vector<std::string>{"--shards=2"});
    ASSERT_TRUE(server_->Start()) << server_->Log();
    ASSERT_GT(server_->rqp_port(), 0) << "no \"RQP listening on\" line: " << server_->Log();
    url_ = GetParam() == Protocol::kGrpc ? "grpc://" + server_->grpc_address()
                                         : "rqp://" + server_->rqp_address();
    char tmpl[] = "/tmp/ringq-cli-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  // Runs `ringq --server URL args...` to completion (bounded).
  Result Ringq(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), {"--server", url_});
    return CliProcess(dir_, std::move(args), input).Wait(30s);
  }
  Result RingqNoServer(std::vector<std::string> args) {
    return CliProcess(dir_, std::move(args), "").Wait(30s);
  }

  std::unique_ptr<testing::ServerProcess> server_;
  std::string url_;
  std::string dir_;
};

// push takes one job per argument, or one per stdin line (no payload, or
// "-"), in batches with --batch; ids come back one per line, in order.
TEST_P(CliTest, PushFromArgsAndStdin) {
  Result r = Ringq({"push", "q", "a", "b", "c"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), 3u) << r.out;
  for (const auto& l : r.lines()) EXPECT_TRUE(std::regex_match(l, std::regex("[0-9]+"))) << l;

  r = Ringq({"push", "q"}, "x\ny\n\nz\n");  // the empty line is skipped
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.lines().size(), 3u) << r.out;

  r = Ringq({"push", "q", "-", "--batch", "2", "--json", "--priority", "5"}, "l1\nl2\nl3\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), 3u) << r.out;
  const uint64_t id = JsonNum(r.lines()[2], "id");
  EXPECT_NE(id, UINT64_MAX) << r.lines()[2];
  EXPECT_NE(r.lines()[0].find("\"duplicate\":false"), std::string::npos);

  r = Ringq({"get", std::to_string(id), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"payload\":\"l3\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"priority\":5"), std::string::npos) << r.out;

  r = Ringq({"stats", "q", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(JsonNum(r.out, "waiting"), 9u) << r.out;
}

// stats --json prints one JSON object per line: each queue, then the totals
// as queue "*"; text mode prints a table with a header.
TEST_P(CliTest, StatsJsonParses) {
  ASSERT_EQ(Ringq({"push", "s1", "a", "b"}).exit_code, 0);
  ASSERT_EQ(Ringq({"push", "s2", "c"}).exit_code, 0);
  Result r = Ringq({"stats", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(lines.size(), 3u) << r.out;
  const std::regex object(R"(\{("[a-z_]+":("[^"]*"|[0-9]+|true|false),?)+\})");
  for (const auto& l : lines) EXPECT_TRUE(std::regex_match(l, object)) << l;
  EXPECT_NE(lines[0].find("\"queue\":\"s1\""), std::string::npos);
  EXPECT_EQ(JsonNum(lines[0], "waiting"), 2u);
  EXPECT_NE(lines[2].find("\"queue\":\"*\""), std::string::npos);
  EXPECT_EQ(JsonNum(lines[2], "waiting"), 3u);

  r = Ringq({"stats"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("QUEUE", 0), 0u) << r.out;
  r = Ringq({"queues", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.lines().size(), 2u) << r.out;
}

// get shows a job; cancel reports the previous state; a second cancel is a
// server error (exit 1, FAILED_PRECONDITION on stderr).
TEST_P(CliTest, GetAndCancel) {
  Result r = Ringq({"push", "gc", "payload-1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id = r.lines().at(0);
  r = Ringq({"get", id});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("waiting"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("payload-1"), std::string::npos) << r.out;
  r = Ringq({"cancel", id, "--reason", "test"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "cancelled " + id + " (was waiting)\n");
  r = Ringq({"get", id, "--json"});
  EXPECT_NE(r.out.find("\"state\":\"cancelled\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"reason\":\"test\""), std::string::npos) << r.out;
  r = Ringq({"cancel", id});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos) << r.err;
}

// pause and resume show in stats.
TEST_P(CliTest, PauseResume) {
  ASSERT_EQ(Ringq({"push", "pq", "x"}).exit_code, 0);
  Result r = Ringq({"pause", "pq"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "paused pq\n");
  EXPECT_NE(Ringq({"stats", "pq", "--json"}).out.find("\"paused\":true"), std::string::npos);
  r = Ringq({"resume", "pq", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"queue\":\"pq\",\"paused\":false}\n");
  EXPECT_NE(Ringq({"stats", "pq", "--json"}).out.find("\"paused\":false"), std::string::npos);
}

// A job with max_attempts=1 failed by `tail --fail` is dead: listed, retried
// (back to waiting), failed again, and purged.
TEST_P(CliTest, DeadListRetryPurge) {
  Result r = Ringq({"push", "dq", "doomed", "--max-attempts", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id = r.lines().at(0);
  r = Ringq({"tail", "dq", "--count", "1", "--fail"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Ringq({"dead", "list", "dq", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), 1u) << r.out;
  EXPECT_EQ(JsonNum(r.out, "id"), std::stoull(id));
  EXPECT_NE(r.out.find("\"state\":\"dead\""), std::string::npos) << r.out;
  r = Ringq({"dead", "list", "dq"});
  EXPECT_NE(r.out.find("error=ringq tail --fail"), std::string::npos) << r.out;

  r = Ringq({"dead", "retry", "dq"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "retried 1\n");
  EXPECT_NE(Ringq({"get", id, "--json"}).out.find("\"state\":\"waiting\""), std::string::npos);
  ASSERT_EQ(Ringq({"tail", "dq", "--count", "1", "--fail"}).exit_code, 0);
  r = Ringq({"dead", "purge", "dq", id, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"queue\":\"dq\",\"purged\":1}\n");
  r = Ringq({"dead", "list", "dq"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
}

// tail --count N prints N jobs (id, queue, attempt, payload), acks them and
// exits 0; stats show exactly N completed.
TEST_P(CliTest, TailCount) {
  ASSERT_EQ(Ringq({"push", "tq", "p1", "p2", "p3", "p4", "p5"}).exit_code, 0);
  Result r = Ringq({"tail", "tq", "--count", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = r.lines();
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(std::regex_match(
        lines[i], std::regex("id=[0-9]+ queue=tq attempt=1/3 payload=p" + std::to_string(i + 1))))
        << lines[i];
  }
  r = Ringq({"tail", "tq", "--count", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(r.lines().size(), 2u) << r.out;
  EXPECT_NE(r.lines()[0].find("\"queue\":\"tq\""), std::string::npos) << r.out;
  r = Ringq({"stats", "tq", "--json"});
  EXPECT_EQ(JsonNum(r.out, "completed_total"), 5u) << r.out;
}

// tail without --count runs until SIGINT, then closes the stream cleanly
// (exit 0): what it printed is what was completed.
TEST_P(CliTest, TailStopsOnSigint) {
  ASSERT_EQ(Ringq({"push", "sq", "a", "b"}).exit_code, 0);
  CliProcess tail(dir_, {"--server", url_, "tail", "sq"}, "");
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (std::string out = tail.Out();
       std::count(out.begin(), out.end(), '\n') < 2 && std::chrono::steady_clock::now() < deadline;
       out = tail.Out()) {
    std::this_thread::sleep_for(10ms);
  }
  tail.Signal(SIGINT);
  Result r = tail.Wait(20s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.lines().size(), 2u) << r.out;
  EXPECT_EQ(JsonNum(Ringq({"stats", "sq", "--json"}).out, "completed_total"), 2u);
}

// JSON output escapes quotes, backslashes and control characters, and
// writes bytes that are not UTF-8 as base64 ("payload_base64").
TEST_P(CliTest, JsonEscaping) {
  Result r = Ringq({"push", "jq", "say \"hi\"\\\t\x01"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Ringq({"get", r.lines().at(0), "--json"});
  EXPECT_NE(r.out.find(R"("payload":"say \"hi\"\\\t\u0001")"), std::string::npos) << r.out;
  r = Ringq({"push", "jq", "\xff\xfe"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Ringq({"get", r.lines().at(0), "--json"});
  EXPECT_NE(r.out.find(R"("payload_base64":"//4=")"), std::string::npos) << r.out;
}

// The documented exit codes: 2 for usage errors (before any connection), 3
// when nothing listens, 4 for a missing job, 1 for a server refusal, 0 and
// the list of codes for --help.
TEST_P(CliTest, ExitCodes) {
  EXPECT_EQ(RingqNoServer({}).exit_code, 2);
  EXPECT_EQ(RingqNoServer({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(RingqNoServer({"push"}).exit_code, 2);
  EXPECT_EQ(RingqNoServer({"get", "abc"}).exit_code, 2);
  EXPECT_EQ(RingqNoServer({"push", "q", "x", "--limit", "3"}).exit_code, 2);
  EXPECT_EQ(RingqNoServer({"--bogus", "stats"}).exit_code, 2);
  EXPECT_EQ(RingqNoServer({"--server", "ftp://x", "stats"}).exit_code, 2);
  Result help = RingqNoServer({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("exit codes"), std::string::npos);

  // A port nothing listens on: this server's, once it is stopped.
  const std::string closed = url_;
  Result r = Ringq({"get", "123"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  r = Ringq({"push", "bad name!", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  server_->Stop();
  r = RingqNoServer({"--server", closed, "--timeout-ms", "3000", "stats"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("UNAVAILABLE"), std::string::npos) << r.err;
}

INSTANTIATE_TEST_SUITE_P(Wire, CliTest, ::testing::Values(Protocol::kGrpc, Protocol::kRqp), Name);

}  // namespace
}  // namespace ringq
