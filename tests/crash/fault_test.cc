// Fault tests: the real server under named crash points, a simulated power
// loss, torn and corrupt WAL segments written by hand, and full disks (issue 3,
// DESIGN.md "WAL format", STYLE.md "Errors").
//
// Each test drives ringqd over gRPC on 127.0.0.1, logs every acknowledged push
// (with a payload that carries its own checksum) and every acknowledged
// completion, damages or stops the server, restarts it on the same data
// directory and checks that:
//   - every acknowledged push is present with the payload that was pushed;
//   - every acknowledged completion is COMPLETED;
//   - the server is healthy (push, fetch, ack).
// Random choices are seeded: RINGQ_FAULT_SEED=<n> repeats a run; every test
// prints the seed it used.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "ringq/v1/queue.grpc.pb.h"
#include "tests/support/payload.h"
#include "tests/support/server_process.h"

namespace ringq {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using testing::ServerProcess;

constexpr int kStartTimeoutMs = 30'000;
constexpr int kCrashTimeoutMs = 20'000;  // load runs at most this long waiting for a crash point
constexpr int kKilledBySigkill = 128 + 9;

// ------------------------------------------------------------------ seeds

uint64_t BaseSeed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("RINGQ_FAULT_SEED");
    return env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  }();
  return seed;
}

// A per-test seed derived from the base seed and the test's name, printed.
uint64_t TestSeed() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  const uint64_t seed = BaseSeed() ^ std::hash<std::string>{}(name);
  std::fprintf(stderr, "[%s] RINGQ_FAULT_SEED=%llu (test seed %llu)\n", name.c_str(),
               static_cast<unsigned long long>(BaseSeed()), static_cast<unsigned long long>(seed));
  return seed;
}

// --------------------------------------------------------------- payloads

using testing::MakePayload;
using testing::PayloadOk;

// What the server acknowledged to the clients.
struct Ledger {
  std::mutex mu;
  std::unordered_map<uint64_t, std::string> pushed;  // acknowledged pushes: id -> payload
  std::unordered_set<uint64_t> completed;            // acknowledged completions
  std::vector<std::string> violations;

  void Violation(std::string v) {
    std::lock_guard lock(mu);
    if (violations.size() < 20) violations.push_back(std::move(v));
  }
  void AddPush(uint64_t id, std::string payload) {
    std::lock_guard lock(mu);
    pushed[id] = std::move(payload);
  }
};

const char* kQueues[] = {"fault-a", "fault-b", "fault-c"};

// ------------------------------------------------------------------ files

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ringq-fault-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes into an existing file in place (what a disk might have kept).
void WriteAt(const std::string& path, size_t offset, const std::string& bytes) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()))
      << path;
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
}

size_t NonZeroExtent(const std::string& buf) {
  size_t n = buf.size();
  while (n > 0 && buf[n - 1] == 0) --n;
  return n;
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  if (n > 0 && s[0] == 0) s[0] = 1;          // a zero length field would read as a clean end
  if (n > 0 && s[n - 1] == 0) s[n - 1] = 1;  // every byte written counts as dropped
  return s;
}

// One record as laid out in a segment: [u32 length][u32 crc][u64 lsn][u8 type][payload].
struct RecordSpan {
  size_t offset;
  size_t size;  // 8 + length
  uint64_t lsn;
  uint8_t type;
};
constexpr size_t kRecordHeaderBytes = 17;

// The records written by the server from `from` to the first zero length (the
// preallocated end) or `to`. Trusts lengths: the server wrote these bytes.
std::vector<RecordSpan> WalkRecords(const std::string& buf, size_t from, size_t to) {
  std::vector<RecordSpan> out;
  size_t off = from;
  to = std::min(to, buf.size());
  while (off + kRecordHeaderBytes <= to) {
    uint32_t len;
    std::memcpy(&len, buf.data() + off, 4);
    if (len < 9 || off + 8 + len > to) break;
    RecordSpan r{off, 8 + static_cast<size_t>(len), 0, 0};
    std::memcpy(&r.lsn, buf.data() + off + 8, 8);
    r.type = static_cast<uint8_t>(buf[off + 16]);
    out.push_back(r);
    off += r.size;
  }
  return out;
}

std::string WalDir(const std::string& data_dir, int shard) {
  char name[32];
  std::snprintf(name, sizeof name, "shard-%03d", shard);
  return data_dir + "/wal/" + name;
}

// Segment files (<20-digit first lsn>.wal) of a shard, oldest first.
std::vector<std::string> Segments(const std::string& data_dir, int shard) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(WalDir(data_dir, shard), ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() == 24 && name.ends_with(".wal")) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Name and size of every file under a directory, to prove nothing changed.
std::string Listing(const std::string& dir) {
  std::vector<std::string> lines;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string line = e.path().string();
    if (e.is_regular_file()) line += " " + std::to_string(e.file_size());
    lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string RegexEscape(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}

// "dropped N bytes" for `segment` in a start's log, or -1 when no torn tail was logged.
long DroppedBytesLogged(const std::string& log, const std::string& segment, size_t* at = nullptr) {
  const std::regex re("torn tail in " + RegexEscape(segment) +
                      " at offset ([0-9]+) \\([^\n]*\\): dropped ([0-9]+) bytes");
  std::smatch m;
  if (!std::regex_search(log, m, re)) return -1;
  if (at) *at = std::stoull(m[1].str());
  return std::stol(m[2].str());
}

// -------------------------------------------------------------- clients

std::unique_ptr<v1::Queue::Stub> Connect(ServerProcess& s) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto ch = grpc::CreateCustomChannel(s.grpc_address(), grpc::InsecureChannelCredentials(), args);
  return v1::Queue::NewStub(ch);
}

void SetDeadline(grpc::ClientContext* ctx, std::chrono::milliseconds d) {
  ctx->set_deadline(std::chrono::system_clock::now() + d);
}

grpc::Status PushOne(v1::Queue::Stub* stub, const std::string& queue, const std::string& payload,
                     uint64_t* id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 5s);
  v1::PushRequest req;
  req.mutable_job()->set_queue(queue);
  req.mutable_job()->set_payload(payload);
  v1::PushResponse resp;
  auto st = stub->Push(&ctx, req, &resp);
  if (st.ok()) *id = resp.id();
  return st;
}

// Fetches one job of `queue` and acks it. Returns the acked id, or 0 with a failure added.
uint64_t FetchAndAck(v1::Queue::Stub* stub, const std::string& queue, const std::string& when) {
  v1::FetchResponse fr;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 5s);
    v1::FetchRequest req;
    req.set_queue(queue);
    req.set_max(1);
    req.set_wait_ms(2000);
    auto st = stub->Fetch(&ctx, req, &fr);
    if (!st.ok() || fr.deliveries_size() != 1) {
      ADD_FAILURE() << when << ": Fetch of " << queue << ": " << st.error_message() << " ("
                    << fr.deliveries_size() << " deliveries)";
      return 0;
    }
  }
  const auto& d = fr.deliveries(0);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 5s);
  v1::AckRequest req;
  req.set_id(d.job().id());
  req.set_lease_token(d.lease_token());
  v1::AckResponse ar;
  auto st = stub->Ack(&ctx, req, &ar);
  if (!st.ok()) {
    ADD_FAILURE() << when << ": Ack of " << d.job().id() << ": " << st.error_message();
    return 0;
  }
  return d.job().id();
}

// The server takes a push, hands it out and takes its ack.
void ExpectHealthy(v1::Queue::Stub* stub, const std::string& when) {
  static std::atomic<int> n{0};
  const std::string queue = "health-" + std::to_string(n++);
  uint64_t id = 0;
  auto st = PushOne(stub, queue, "health check", &id);
  ASSERT_TRUE(st.ok()) << when << ": health push: " << st.error_message();
  EXPECT_EQ(FetchAndAck(stub, queue, when + " (health)"), id);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 5s);
  v1::GetJobRequest req;
  req.set_id(id);
  v1::Job job;
  st = stub->GetJob(&ctx, req, &job);
  ASSERT_TRUE(st.ok()) << when << ": " << st.error_message();
  EXPECT_EQ(job.state(), v1::JOB_STATE_COMPLETED) << when << ": health job";
}

// Every acknowledged push is there with its payload; every acknowledged
// completion is COMPLETED; no worker saw a violation.
void Check(v1::Queue::Stub* stub, Ledger& ledger, const std::string& when) {
  std::unordered_map<uint64_t, std::string> pushed;
  std::unordered_set<uint64_t> completed;
  {
    std::lock_guard lock(ledger.mu);
    pushed = ledger.pushed;
    completed = ledger.completed;
    for (const auto& v : ledger.violations) ADD_FAILURE() << when << ": " << v;
    ledger.violations.clear();
  }
  size_t missing = 0, not_completed = 0;
  for (const auto& [id, payload] : pushed) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 5s);
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    auto st = stub->GetJob(&ctx, req, &job);
    if (!st.ok()) {
      if (++missing <= 5) {
        ADD_FAILURE() << when << ": acknowledged job " << id << " lost: " << st.error_message();
      }
      continue;
    }
    EXPECT_EQ(job.payload(), payload) << when << ": job " << id << " payload";
    if (completed.count(id) && job.state() != v1::JOB_STATE_COMPLETED) {
      if (++not_completed <= 5) {
        ADD_FAILURE() << when << ": acknowledged completion of " << id << " is in state "
                      << v1::JobState_Name(job.state());
      }
    }
  }
  EXPECT_EQ(missing, 0u) << when << ": " << missing << " of " << pushed.size()
                         << " acknowledged pushes lost";
  EXPECT_EQ(not_completed, 0u) << when << ": of " << completed.size()
                               << " acknowledged completions";
  std::fprintf(stderr, "  %s: checked %zu acknowledged pushes, %zu acknowledged completions\n",
               when.c_str(), pushed.size(), completed.size());
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Pushes (single and batches of 20) until `stop`; logs what was acknowledged.
void Producer(v1::Queue::Stub* stub, uint64_t seed, size_t payload_min, size_t payload_max,
              std::atomic<bool>* stop, Ledger* ledger) {
  std::mt19937_64 rng(seed);
  uint64_t tag = seed << 20;
  auto size = [&] { return payload_min + rng() % (payload_max - payload_min + 1); };
  while (!stop->load()) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 2s);
    if (rng() % 4 == 0) {
      v1::PushBatchRequest req;
      std::vector<std::string> payloads;
      for (int i = 0; i < 20; ++i) {
        auto* j = req.add_jobs();
        j->set_queue(kQueues[rng() % 3]);
        payloads.push_back(MakePayload(rng, ++tag, size()));
        j->set_payload(payloads.back());
      }
      v1::PushBatchResponse resp;
      if (!stub->PushBatch(&ctx, req, &resp).ok()) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      for (int i = 0; i < resp.results_size(); ++i) {
        if (!resp.results(i).has_error()) ledger->AddPush(resp.results(i).id(), payloads[i]);
      }
    } else {
      v1::PushRequest req;
      req.mutable_job()->set_queue(kQueues[rng() % 3]);
      std::string payload = MakePayload(rng, ++tag, size());
      req.mutable_job()->set_payload(payload);
      v1::PushResponse resp;
      if (!stub->Push(&ctx, req, &resp).ok()) {
        std::this_thread::sleep_for(5ms);
        continue;
      }
      ledger->AddPush(resp.id(), std::move(payload));
    }
  }
}

// A Subscribe worker: verifies each payload, acks it and logs acknowledged
// completions; flags a job delivered again after its completion was acked.
// Ends when the stream breaks (the server died), on `stop`, or with
// `idle_ms`, after that long without a delivery.
void Worker(v1::Queue::Stub* stub, std::atomic<bool>* stop, Ledger* ledger, int idle_ms = 0) {
  grpc::ClientContext ctx;
  auto stream = stub->Subscribe(&ctx);
  v1::SubscribeRequest open;
  for (const char* q : kQueues) open.mutable_open()->add_queues(q);
  open.mutable_open()->set_credits(64);
  if (!stream->Write(open)) return;
  std::atomic<bool> done{false};
  std::atomic<int64_t> last_delivery_ms{NowMs()};
  std::thread watchdog([&] {
    while (!done.load()) {
      if (stop->load() || (idle_ms > 0 && NowMs() - last_delivery_ms.load() > idle_ms)) {
        ctx.TryCancel();
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
  });
  v1::SubscribeResponse resp;
  while (stream->Read(&resp)) {
    v1::SubscribeRequest acks;
    for (const auto& d : resp.deliveries()) {
      last_delivery_ms = NowMs();
      const uint64_t id = d.job().id();
      {
        std::lock_guard lock(ledger->mu);
        if (ledger->completed.count(id) && ledger->violations.size() < 20) {
          ledger->violations.push_back("job " + std::to_string(id) +
                                       " delivered again after its completion was acked");
        }
        auto it = ledger->pushed.find(id);
        if (it != ledger->pushed.end() && it->second != d.job().payload() &&
            ledger->violations.size() < 20) {
          ledger->violations.push_back("job " + std::to_string(id) + " payload changed");
        }
      }
      if (!PayloadOk(d.job().payload())) {
        ledger->Violation("job " + std::to_string(id) + " payload checksum mismatch");
      }
      auto* a = acks.add_acks();
      a->set_id(id);
      a->set_lease_token(d.lease_token());
    }
    for (const auto& r : resp.results()) {
      if (r.op() == v1::SETTLE_OP_ACK && !r.has_error()) {
        std::lock_guard lock(ledger->mu);
        ledger->completed.insert(r.id());
      }
    }
    if (acks.acks_size() > 0 && !stream->Write(acks)) break;
  }
  done = true;
  watchdog.join();
  stream->Finish();
}

// Runs two producers and a worker against `server` until it exits by itself
// (a crash point) or timeout_ms pass (then it is killed). Returns how it ended
// (ServerProcess::WaitExit), -1 on the timeout.
int LoadUntilExit(ServerProcess& server, Ledger& ledger, uint64_t seed, size_t payload_min,
                  size_t payload_max, int timeout_ms) {
  auto stub = Connect(server);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < 2; ++p) {
    threads.emplace_back(
        [&, p] { Producer(stub.get(), seed * 131 + p, payload_min, payload_max, &stop, &ledger); });
  }
  threads.emplace_back([&] { Worker(stub.get(), &stop, &ledger); });
  const int status = server.WaitExit(timeout_ms);
  if (status < 0) server.Kill();
  stop = true;
  for (auto& t : threads) t.join();
  return status;
}

// Runs the load for `ms`, then SIGKILLs the server.
void LoadThenKill(ServerProcess& server, Ledger& ledger, uint64_t seed, int ms) {
  auto stub = Connect(server);
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < 2; ++p) {
    threads.emplace_back([&, p] { Producer(stub.get(), seed * 131 + p, 16, 600, &stop, &ledger); });
  }
  threads.emplace_back([&] { Worker(stub.get(), &stop, &ledger); });
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  server.Kill();
  stop = true;
  for (auto& t : threads) t.join();
}

// Flags shared by the load tests: completed jobs stay, so acknowledged
// completions can be checked after a restart.
std::vector<std::string> LoadFlags(std::vector<std::string> more = {}) {
  std::vector<std::string> f = {"--shards=2",
                                "--completed-retention-count=100000000",
                                "--completed-retention-ms=1000000000",
                                "--default-lease-ms=2000",
                                "--default-backoff-base-ms=10",
                                "--default-max-attempts=1000",
                                "--payload-bytes-max=65536",
                                "--result-bytes-max=65536"};
  f.insert(f.end(), more.begin(), more.end());
  return f;
}

// Restarts on `dir` and checks the ledger and health. Leaves the server running.
void RestartAndCheck(std::optional<ServerProcess>& server, const std::vector<std::string>& flags,
                     const std::string& dir, Ledger& ledger, const std::string& when,
                     const std::string& log_path = "") {
  server.emplace(RINGQD_PATH, flags, dir);
  if (!log_path.empty()) server->SetLogPath(log_path);
  ASSERT_TRUE(server->Start(kStartTimeoutMs))
      << when << ": restart failed (exit status " << server->exit_status() << "):\n"
      << server->StartLog();
  auto stub = Connect(*server);
  Check(stub.get(), ledger, when);
  ExpectHealthy(stub.get(), when);
}

// Takes and acks what is ready (until 300 ms pass without a delivery, at most
// 5 s), then checks again: an acknowledged completion must not be delivered.
void DrainAndCheck(ServerProcess& server, Ledger& ledger, const std::string& when) {
  auto stub = Connect(server);
  std::atomic<bool> stop{false};
  std::thread timer([&] {
    for (int i = 0; i < 500 && !stop.load(); ++i) std::this_thread::sleep_for(10ms);
    stop = true;
  });
  Worker(stub.get(), &stop, &ledger, /*idle_ms=*/300);
  stop = true;
  timer.join();
  Check(stub.get(), ledger, when + ", drained");
}

// ----------------------------------------------------------- crash points

struct CrashCase {
  const char* point;
  int at_min, at_max;  // the n-th pass kills; n seeded in [at_min, at_max]
  std::vector<std::string> flags;
  size_t payload_min;
  size_t payload_max;
};

std::string CaseName(const ::testing::TestParamInfo<CrashCase>& info) { return info.param.point; }
void PrintTo(const CrashCase& c, std::ostream* os) {
  *os << c.point << ":" << c.at_min << ".." << c.at_max;
}

class CrashPointTest : public ::testing::TestWithParam<CrashCase> {};

TEST_P(CrashPointTest, AcknowledgedSurvivesCrashAtPoint) {
  // Goal: a SIGKILL at this named point under a producer + Subscribe-acker load
  // loses no acknowledged push or completion, and the restarted server works;
  // two cycles on one data directory, the second from recovered state.
  const CrashCase& c = GetParam();
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  TempDir tmp;
  const std::string dir = tmp.path() + "/data";
  const std::vector<std::string> flags = LoadFlags(c.flags);
  Ledger ledger;
  std::optional<ServerProcess> server;
  for (int cycle = 0; cycle < 2 && !HasFailure(); ++cycle) {
    const int at = c.at_min + static_cast<int>(rng() % (c.at_max - c.at_min + 1));
    const std::string armed = std::string(c.point) + ":" + std::to_string(at);
    SCOPED_TRACE("cycle " + std::to_string(cycle) + ", RINGQ_CRASH_POINT=" + armed);
    size_t acked_before;
    {
      std::lock_guard lock(ledger.mu);
      acked_before = ledger.pushed.size();
    }
    server.emplace(RINGQD_PATH, flags, dir);
    server->SetEnv("RINGQ_CRASH_POINT", armed);
    ASSERT_TRUE(server->Start(kStartTimeoutMs)) << server->StartLog();
    const int status =
        LoadUntilExit(*server, ledger, seed + cycle, c.payload_min, c.payload_max, kCrashTimeoutMs);
    ASSERT_EQ(status, kKilledBySigkill)
        << "crash point " << armed << " not reached in " << kCrashTimeoutMs << " ms:\n"
        << server->StartLog();
    ASSERT_NE(server->StartLog().find(std::string("crash point ") + c.point + " reached"),
              std::string::npos)
        << server->StartLog();
    {
      std::lock_guard lock(ledger.mu);
      ASSERT_GT(ledger.pushed.size(), acked_before) << "nothing was acknowledged before the crash";
    }
    const std::string when = "cycle " + std::to_string(cycle) + ", after a crash at " + armed;
    RestartAndCheck(server, flags, dir, ledger, when);
    if (!HasFailure()) DrainAndCheck(*server, ledger, when);
    if (HasFailure()) std::fprintf(stderr, "%s\n", server->Log().c_str());
    server->Kill();
  }
}

const std::vector<std::string> kSmallSegments = {"--wal-segment-bytes=2097152"};
const std::vector<std::string> kFastCheckpoints = {"--checkpoint-interval-ms=100"};

INSTANTIATE_TEST_SUITE_P(
    Points, CrashPointTest,
    ::testing::Values(CrashCase{"wal_after_write_before_sync", 10, 200, kSmallSegments, 16, 600},
                      CrashCase{"wal_after_sync_before_reply", 10, 200, kSmallSegments, 16, 600},
                      CrashCase{"wal_mid_roll", 1, 3, kSmallSegments, 4096, 16384},
                      CrashCase{"checkpoint_before_write", 2, 6, kFastCheckpoints, 16, 2000},
                      CrashCase{"checkpoint_after_write_before_flush", 2, 6, kFastCheckpoints, 16,
                                2000}),
    CaseName);

TEST(CrashPointRecoveryTest, CrashDuringRecoveryThenRestart) {
  // Goal: a SIGKILL in a restart's recovery after its RocksDB flush, before the
  // replayed segments are deleted, loses nothing: the next restart recovers.
  const uint64_t seed = TestSeed();
  TempDir tmp;
  const std::string dir = tmp.path() + "/data";
  const std::vector<std::string> flags = LoadFlags({"--wal-segment-bytes=2097152"});
  Ledger ledger;
  std::optional<ServerProcess> server;
  server.emplace(RINGQD_PATH, flags, dir);
  ASSERT_TRUE(server->Start(kStartTimeoutMs)) << server->StartLog();
  LoadThenKill(*server, ledger, seed, 400);  // leaves records above the applied LSN
  std::vector<std::string> replayed = Segments(dir, 0);
  for (const auto& s : Segments(dir, 1)) replayed.push_back(s);
  ASSERT_FALSE(replayed.empty());

  server.emplace(RINGQD_PATH, flags, dir);
  server->SetEnv("RINGQ_CRASH_POINT", "recovery_after_flush_before_delete");
  ASSERT_FALSE(server->Start(kStartTimeoutMs)) << "recovery did not reach the crash point";
  EXPECT_EQ(server->exit_status(), kKilledBySigkill) << server->StartLog();
  ASSERT_NE(server->StartLog().find("crash point recovery_after_flush_before_delete reached"),
            std::string::npos)
      << server->StartLog();
  // The replayed state is in RocksDB, and its segments are all still there.
  for (const auto& s : replayed) ASSERT_TRUE(fs::exists(s)) << s << " deleted before the crash";

  RestartAndCheck(server, flags, dir, ledger, "after a crash during recovery");
  for (const auto& s : replayed) EXPECT_FALSE(fs::exists(s)) << s << " not retired by recovery";
  if (!HasFailure()) DrainAndCheck(*server, ledger, "after a crash during recovery");
  if (HasFailure()) std::fprintf(stderr, "%s\n", server->Log().c_str());
  server->Kill();
}

// ------------------------------------------------------ simulated power loss

enum class Loss { kKeep, kZero, kGarbage, kPrefix, kHole };
const char* LossName(Loss l) {
  switch (l) {
    case Loss::kKeep:
      return "keep";
    case Loss::kZero:
      return "zero";
    case Loss::kGarbage:
      return "garbage";
    case Loss::kPrefix:
      return "prefix";
    case Loss::kHole:
      return "hole";
  }
  return "?";
}

struct Unsynced {
  std::string path;
  size_t from = 0, to = 0;
};

bool ParseUnsynced(const std::string& log, Unsynced* u) {
  static const std::regex re("unsynced (\\S+) bytes ([0-9]+)\\.\\.([0-9]+)");
  std::smatch m;
  if (!std::regex_search(log, m, re)) return false;
  u->path = m[1].str();
  u->from = std::stoull(m[2].str());
  u->to = std::stoull(m[3].str());
  return true;
}

// Applies a power-loss outcome to the unsynced write [from, to) of the
// segment. Returns the bytes recovery must drop, 0 for a clean end: from the
// record holding the first changed byte to the last non-zero byte, unless that
// record's length reads 0 and no intact record follows (the scanner's end of
// the written part, wal_format.h).
size_t SimulateLoss(const Unsynced& u, Loss loss, std::mt19937_64& rng, std::string* what) {
  const std::string before = ReadAll(u.path);
  const auto records = WalkRecords(before, u.from, u.to);
  if (records.empty() || records.back().offset + records.back().size != u.to) {
    ADD_FAILURE() << "the unsynced range " << u.from << ".." << u.to << " of " << u.path
                  << " is not whole records";
    return 0;
  }
  const size_t n = u.to - u.from;
  switch (loss) {
    case Loss::kKeep:
      *what = "kept all " + std::to_string(n) + " bytes";
      break;
    case Loss::kZero:
      WriteAt(u.path, u.from, std::string(n, '\0'));
      *what = "zeroed all " + std::to_string(n) + " bytes";
      break;
    case Loss::kGarbage:
      WriteAt(u.path, u.from, RandomBytes(rng, n));
      *what = "replaced all " + std::to_string(n) + " bytes with garbage";
      break;
    case Loss::kPrefix: {
      const size_t keep = 1 + rng() % (n - 1);
      WriteAt(u.path, u.from + keep, std::string(n - keep, '\0'));
      *what = "kept a prefix of " + std::to_string(keep) + " of " + std::to_string(n) + " bytes";
      break;
    }
    case Loss::kHole: {
      // Pages persist in any order: a piece in the middle is lost, later ones kept.
      const size_t at = rng() % (n - 1);
      const size_t len = 1 + rng() % std::min<size_t>(n - 1 - at, 8192);
      const bool garbage = rng() % 2;
      WriteAt(u.path, u.from + at, garbage ? RandomBytes(rng, len) : std::string(len, '\0'));
      *what = std::string(garbage ? "garbage" : "zeros") + " in bytes " +
              std::to_string(u.from + at) + ".." + std::to_string(u.from + at + len) +
              " of the unsynced " + std::to_string(u.from) + ".." + std::to_string(u.to);
      break;
    }
  }
  const std::string after = ReadAll(u.path);
  size_t first = u.from, last = u.to;  // changed bytes: [first, last)
  while (first < u.to && after[first] == before[first]) ++first;
  if (first == u.to) return 0;  // nothing changed
  while (last > first && after[last - 1] == before[last - 1]) --last;
  size_t bad = u.from;
  bool intact_after = false;
  for (const auto& r : records) {
    if (r.offset <= first) bad = r.offset;
    if (r.offset >= last) intact_after = true;
  }
  uint32_t length;
  std::memcpy(&length, after.data() + bad, 4);
  if (length == 0 && !intact_after) return 0;
  const size_t extent = NonZeroExtent(after);
  return extent > bad ? extent - bad : 0;
}

TEST(PowerLossTest, UnsyncedWriteKeptZeroedGarbledOrTorn) {
  // Goal: a power cut during a WAL write (the server SIGKILLed after a write,
  // before its fdatasync, then the unsynced bytes kept, zeroed, garbled, cut
  // or holed, seeded) is a torn tail: the server starts, logs what it dropped,
  // and every acknowledged push and completion survives. Several rounds.
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  const char* rounds_env = std::getenv("RINGQ_POWER_LOSS_ROUNDS");
  const int rounds = rounds_env ? std::atoi(rounds_env) : 10;
  std::vector<Loss> order = {Loss::kKeep, Loss::kZero, Loss::kGarbage, Loss::kPrefix, Loss::kHole};
  std::shuffle(order.begin(), order.end(), rng);
  TempDir tmp;
  const std::string dir = tmp.path() + "/data";
  const std::vector<std::string> flags =
      LoadFlags({"--wal-segment-bytes=2097152", "--checkpoint-interval-ms=150"});
  Ledger ledger;
  std::optional<ServerProcess> server;
  for (int round = 0; round < rounds && !HasFailure(); ++round) {
    const int at = 5 + static_cast<int>(rng() % 200);
    const Loss loss = order[round % order.size()];
    SCOPED_TRACE("round " + std::to_string(round) +
                 ", wal_after_write_before_sync:" + std::to_string(at) + ", " + LossName(loss));
    server.emplace(RINGQD_PATH, flags, dir);
    server->SetEnv("RINGQ_CRASH_POINT", "wal_after_write_before_sync:" + std::to_string(at));
    ASSERT_TRUE(server->Start(kStartTimeoutMs)) << server->StartLog();
    const int status = LoadUntilExit(*server, ledger, seed + round, 16, 2000, kCrashTimeoutMs);
    ASSERT_EQ(status, kKilledBySigkill) << server->StartLog();
    Unsynced u;
    ASSERT_TRUE(ParseUnsynced(server->StartLog(), &u)) << server->StartLog();
    ASSERT_LT(u.from, u.to);
    std::string what;
    const size_t expect_dropped = SimulateLoss(u, loss, rng, &what);
    std::fprintf(stderr, "  round %d: crash at write %d, %s of %s; expect %zu bytes dropped\n",
                 round, at, what.c_str(), u.path.c_str(), expect_dropped);

    const std::string when = "round " + std::to_string(round) + " (" + what + ")";
    RestartAndCheck(server, flags, dir, ledger, when);  // a torn tail is not corruption
    size_t logged_at = 0;
    const long logged = DroppedBytesLogged(server->StartLog(), u.path, &logged_at);
    if (expect_dropped == 0) {
      EXPECT_EQ(logged, -1) << "nothing to drop, yet:\n" << server->StartLog();
    } else {
      EXPECT_EQ(logged, static_cast<long>(expect_dropped)) << server->StartLog();
    }
    if (HasFailure()) std::fprintf(stderr, "%s\n", server->Log().c_str());
    server->Kill();
  }
}

// ------------------------------------------------------- torn tail by hand

TEST(TornTailTest, BytesAfterLastRecordAreDroppedAndLogged) {
  // Goal: garbage, a partial record or a partial header written after the last
  // record of the current segment (records only in the WAL: kill -9, no
  // checkpoint) is a torn tail: the restart drops exactly those bytes, says
  // so, and keeps every acknowledged push.
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  TempDir tmp;
  const std::string dir = tmp.path() + "/data";
  const std::vector<std::string> flags =
      LoadFlags({"--shards=1", "--wal-segment-bytes=4194304", "--checkpoint-interval-ms=600000"});
  Ledger ledger;
  std::optional<ServerProcess> server;
  server.emplace(RINGQD_PATH, flags, dir);
  ASSERT_TRUE(server->Start(kStartTimeoutMs)) << server->StartLog();
  const char* kinds[] = {"garbage", "partial record", "partial header"};
  uint64_t tag = seed << 20;
  for (int round = 0; round < 3 && !HasFailure(); ++round) {
    SCOPED_TRACE(std::string("round ") + std::to_string(round) + ": " + kinds[round]);
    auto stub = Connect(*server);
    for (int i = 0; i < 40; ++i) {
      std::string payload = MakePayload(rng, ++tag, 100 + rng() % 2000);
      uint64_t id = 0;
      auto st = PushOne(stub.get(), kQueues[i % 3], payload, &id);
      ASSERT_TRUE(st.ok()) << st.error_message();
      ledger.AddPush(id, std::move(payload));
    }
    for (int i = 0; i < 5; ++i) {
      const uint64_t id = FetchAndAck(stub.get(), kQueues[i % 3], "ack before kill");
      if (id != 0) ledger.completed.insert(id);
    }
    server->Kill();

    const auto segments = Segments(dir, 0);
    ASSERT_FALSE(segments.empty());
    const std::string seg = segments.back();
    const std::string buf = ReadAll(seg);
    const auto records = WalkRecords(buf, 0, buf.size());
    ASSERT_GE(records.size(), 45u) << seg;
    const size_t end = records.back().offset + records.back().size;
    ASSERT_LE(NonZeroExtent(buf), end) << seg << ": bytes after the last record";
    std::string tail;
    if (round == 0) {
      tail = RandomBytes(rng, 1 + rng() % 4096);
    } else {
      // The header of a plausible next record, then part of its payload (or header).
      const uint32_t length = 0x00010203;  // little-endian 03 02 01 00: 3 non-zero bytes
      const uint32_t crc = static_cast<uint32_t>(rng()) | 1;
      const uint64_t lsn = records.back().lsn + 1;
      const uint8_t type = 1;
      tail.append(reinterpret_cast<const char*>(&length), 4);
      tail.append(reinterpret_cast<const char*>(&crc), 4);
      tail.append(reinterpret_cast<const char*>(&lsn), 8);
      tail.append(reinterpret_cast<const char*>(&type), 1);
      tail.append(std::string(500, 'x'));
      if (round == 2) tail.resize(3);  // 3 bytes: a length field cut short
    }
    WriteAt(seg, end, tail);
    std::fprintf(stderr, "  round %d: wrote %zu bytes of %s at offset %zu of %s\n", round,
                 tail.size(), kinds[round], end, seg.c_str());

    RestartAndCheck(server, flags, dir, ledger,
                    std::string("after a torn tail of ") + kinds[round]);
    size_t logged_at = 0;
    EXPECT_EQ(DroppedBytesLogged(server->StartLog(), seg, &logged_at),
              static_cast<long>(tail.size()))
        << server->StartLog();
    EXPECT_EQ(logged_at, end) << server->StartLog();
  }
  if (HasFailure()) std::fprintf(stderr, "%s\n", server->Log().c_str());
  server->Kill();
}

// ------------------------------------------------- corruption mid-segment

TEST(CorruptionTest, FlippedBitMidSegmentRefusesStartUnlessRepair) {
  // Goal: one flipped bit in an early record with more than 2 MiB of valid
  // records after it is corruption, not a torn tail: the server refuses to
  // start, names the segment and offset and changes nothing; with
  // --repair-wal it starts, keeps the bad bytes in <segment>.bad-<offset> and
  // serves the jobs before the bad record.
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  TempDir tmp;
  const std::string dir = tmp.path() + "/data";
  const std::vector<std::string> flags =
      LoadFlags({"--shards=1", "--wal-segment-bytes=16777216", "--checkpoint-interval-ms=600000"});
  std::vector<std::pair<uint64_t, std::string>> pushed;  // in push order
  {
    ServerProcess server(RINGQD_PATH, flags, dir);
    ASSERT_TRUE(server.Start(kStartTimeoutMs)) << server.StartLog();
    auto stub = Connect(server);
    uint64_t tag = seed << 20;
    for (int b = 0; b < 32; ++b) {  // 32 x 8 x 16 KiB = 4 MiB
      v1::PushBatchRequest req;
      std::vector<std::string> payloads;
      for (int i = 0; i < 8; ++i) {
        payloads.push_back(MakePayload(rng, ++tag, 16384));
        auto* j = req.add_jobs();
        j->set_queue(kQueues[0]);
        j->set_payload(payloads.back());
      }
      grpc::ClientContext ctx;
      SetDeadline(&ctx, 10s);
      v1::PushBatchResponse resp;
      auto st = stub->PushBatch(&ctx, req, &resp);
      ASSERT_TRUE(st.ok()) << st.error_message();
      ASSERT_EQ(resp.results_size(), 8);
      for (int i = 0; i < 8; ++i) {
        ASSERT_FALSE(resp.results(i).has_error()) << resp.results(i).error().message();
        pushed.emplace_back(resp.results(i).id(), payloads[i]);
      }
    }
    server.Kill();  // records stay only in the WAL
  }
  const auto segments = Segments(dir, 0);
  ASSERT_EQ(segments.size(), 1u);
  const std::string seg = segments[0];
  std::string buf = ReadAll(seg);
  const auto records = WalkRecords(buf, 0, buf.size());
  ASSERT_GE(records.size(), 256u);
  const RecordSpan& victim = records[1 + rng() % 4];
  const size_t bad = victim.offset;
  ASSERT_GT(NonZeroExtent(buf), bad + (2u << 20) + 4096) << "not enough records after the flip";
  // Which jobs lie wholly before the bad record (their payloads are unique).
  std::vector<bool> before(pushed.size());
  for (size_t i = 0; i < pushed.size(); ++i) {
    const size_t pos = buf.find(pushed[i].second.substr(0, 40));
    ASSERT_NE(pos, std::string::npos) << "job " << pushed[i].first << " not in the segment";
    before[i] = pos < bad;
  }
  const size_t flip_at = bad + kRecordHeaderBytes + rng() % (victim.size - kRecordHeaderBytes);
  const int bit = static_cast<int>(rng() % 8);
  buf[flip_at] = static_cast<char>(buf[flip_at] ^ (1 << bit));
  WriteAt(seg, flip_at, buf.substr(flip_at, 1));
  std::fprintf(stderr, "  flipped bit %d of byte %zu (record lsn %llu at offset %zu) of %s\n", bit,
               flip_at, static_cast<unsigned long long>(victim.lsn), bad, seg.c_str());
  const std::string listing = Listing(tmp.path() + "/data/wal");

  {
    ServerProcess server(RINGQD_PATH, flags, dir);
    ASSERT_FALSE(server.Start(kStartTimeoutMs)) << "started on a corrupt WAL:\n"
                                                << server.StartLog();
    const std::string log = server.StartLog();
    EXPECT_GT(server.exit_status(), 0) << log;
    EXPECT_LT(server.exit_status(), 128) << "refusing is an exit, not a crash:\n" << log;
    EXPECT_NE(log.find(seg), std::string::npos) << "log does not name the segment:\n" << log;
    EXPECT_NE(log.find("offset " + std::to_string(bad)), std::string::npos)
        << "log does not name offset " << bad << ":\n"
        << log;
    EXPECT_EQ(ReadAll(seg), buf) << "the refused start changed the segment";
    EXPECT_EQ(Listing(tmp.path() + "/data/wal"), listing) << "the refused start changed the WAL";
  }

  std::vector<std::string> repair_flags = flags;
  repair_flags.push_back("--repair-wal");
  ServerProcess server(RINGQD_PATH, repair_flags, dir);
  ASSERT_TRUE(server.Start(kStartTimeoutMs)) << "--repair-wal did not start:\n"
                                             << server.StartLog();
  const std::string side = seg + ".bad-" + std::to_string(bad);
  ASSERT_TRUE(fs::exists(side)) << side << " missing:\n" << server.StartLog();
  EXPECT_EQ(ReadAll(side), buf.substr(bad, NonZeroExtent(buf) - bad))
      << side << " does not hold the bytes from the bad record on";
  auto stub = Connect(server);
  size_t kept = 0, missing = 0, after_found = 0;
  for (size_t i = 0; i < pushed.size(); ++i) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 5s);
    v1::GetJobRequest req;
    req.set_id(pushed[i].first);
    v1::Job job;
    auto st = stub->GetJob(&ctx, req, &job);
    if (!before[i]) {
      after_found += st.ok();
      continue;
    }
    ++kept;
    if (!st.ok()) {
      if (++missing <= 5)
        ADD_FAILURE() << "job " << pushed[i].first << " before the bad record lost";
      continue;
    }
    EXPECT_EQ(job.payload(), pushed[i].second) << "job " << pushed[i].first;
  }
  EXPECT_GT(kept, 0u);
  EXPECT_EQ(missing, 0u);
  std::fprintf(stderr,
               "  after repair: %zu jobs before the bad record present, %zu of %zu from "
               "it on still found\n",
               kept - missing, after_found, pushed.size() - kept);
  ExpectHealthy(stub.get(), "after --repair-wal");
  if (HasFailure()) std::fprintf(stderr, "%s\n", server.Log().c_str());
  server.Kill();
}

// ---------------------------------------------------------- disk full

TEST(DiskFullTest, WalBytesMaxRefusesPushesKeepsAcks) {
  // Goal: at --wal-bytes-max pushes get RESOURCE_EXHAUSTED naming the limit
  // while fetch and ack still work; after kill -9 and restart nothing
  // acknowledged is lost and pushes are taken again.
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  TempDir tmp;
  const std::string dir = tmp.path() + "/data";
  const std::vector<std::string> flags =
      LoadFlags({"--shards=1", "--wal-segment-bytes=2097152", "--wal-bytes-max=4194304",
                 "--checkpoint-interval-ms=600000"});
  Ledger ledger;
  std::optional<ServerProcess> server;
  server.emplace(RINGQD_PATH, flags, dir);
  ASSERT_TRUE(server->Start(kStartTimeoutMs)) << server->StartLog();
  auto stub = Connect(*server);
  grpc::Status refused;
  uint64_t tag = seed << 20;
  int pushes = 0;
  for (; pushes < 1000; ++pushes) {  // 4 MiB / 16 KiB = 256: far fewer fit
    std::string payload = MakePayload(rng, ++tag, 16384);
    uint64_t id = 0;
    auto st = PushOne(stub.get(), kQueues[0], payload, &id);
    if (st.ok()) {
      ledger.AddPush(id, std::move(payload));
      continue;
    }
    refused = st;
    break;
  }
  std::fprintf(stderr, "  %d pushes of 16 KiB taken, then: %s\n", pushes,
               refused.error_message().c_str());
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "after " << pushes << " pushes: " << refused.error_message();
  EXPECT_NE(refused.error_message().find("--wal-bytes-max"), std::string::npos)
      << refused.error_message();
  for (int i = 0; i < 3; ++i) {
    const uint64_t id = FetchAndAck(stub.get(), kQueues[0], "while the WAL is full");
    if (id != 0) ledger.completed.insert(id);
  }
  uint64_t id = 0;
  EXPECT_EQ(PushOne(stub.get(), kQueues[0], "still full?", &id).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  server->Kill();

  RestartAndCheck(server, flags, dir, ledger, "after restart with a full WAL");
  stub = Connect(*server);
  std::string payload = MakePayload(rng, ++tag, 16384);
  auto st = PushOne(stub.get(), kQueues[0], payload, &id);
  EXPECT_TRUE(st.ok()) << "pushes still refused after the restart: " << st.error_message();
  EXPECT_EQ(Segments(dir, 0).size(), 1u) << "recovery did not retire the old segments";
  if (HasFailure()) std::fprintf(stderr, "%s\n", server->Log().c_str());
  server->Kill();
}

// Unmounts on scope exit, even when the test fails (servers must be gone first).
struct Mount {
  std::string path;
  bool mounted = false;
  ~Mount() {
    if (mounted && umount2(path.c_str(), 0) != 0) umount2(path.c_str(), MNT_DETACH);
  }
};

TEST(DiskFullTest, RealFullDiskRefusesPushesUntilSpaceReturns) {
  // Goal: on a small tmpfs, pushes get RESOURCE_EXHAUSTED before the device
  // fills (--disk-free-min-bytes) while the server stays up and acks work;
  // freeing space lets pushes in again; kill -9 + restart loses nothing.
  const uint64_t seed = TestSeed();
  std::mt19937_64 rng(seed);
  TempDir tmp;
  Mount mnt{tmp.path() + "/mnt"};
  fs::create_directories(mnt.path);
  if (mount("tmpfs", mnt.path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0700") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs on " << mnt.path << " (" << std::strerror(errno)
                 << "): needs root (CAP_SYS_ADMIN)";
  }
  mnt.mounted = true;
  const std::string filler = mnt.path + "/filler";
  {
    std::ofstream out(filler, std::ios::binary);
    const std::string mib(1 << 20, 'f');
    for (int i = 0; i < 20; ++i) out.write(mib.data(), static_cast<std::streamsize>(mib.size()));
    ASSERT_TRUE(out.good()) << "cannot write the 20 MiB filler";
  }
  const std::string dir = mnt.path + "/data";
  std::vector<std::string> flags = LoadFlags({"--shards=1", "--wal-segment-bytes=4194304"});
  flags.push_back("--disk-free-min-bytes=16777216");
  Ledger ledger;
  std::optional<ServerProcess> server;
  server.emplace(RINGQD_PATH, flags, dir);
  server->SetLogPath(tmp.path() + "/server.log");  // off the full disk
  ASSERT_TRUE(server->Start(kStartTimeoutMs)) << server->StartLog();
  auto stub = Connect(*server);

  grpc::Status refused;
  uint64_t tag = seed << 20;
  int pushes = 0;
  const auto fill_deadline = std::chrono::steady_clock::now() + 30s;
  for (; pushes < 1000 && std::chrono::steady_clock::now() < fill_deadline; ++pushes) {
    std::string payload = MakePayload(rng, ++tag, 65536);
    uint64_t id = 0;
    auto st = PushOne(stub.get(), kQueues[0], payload, &id);
    if (st.ok()) {
      ledger.AddPush(id, std::move(payload));
      continue;
    }
    refused = st;
    break;
  }
  std::fprintf(stderr, "  %d pushes of 64 KiB taken, then: %s\n", pushes,
               refused.error_message().c_str());
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "after " << pushes << " pushes: " << refused.error_message() << "\n"
      << server->StartLog();
  EXPECT_NE(refused.error_message().find("--disk-free-min-bytes"), std::string::npos)
      << refused.error_message();
  ASSERT_EQ(server->WaitExit(0), -1) << "the server died on a full disk:\n" << server->StartLog();
  for (int i = 0; i < 3; ++i) {
    const uint64_t id = FetchAndAck(stub.get(), kQueues[0], "while the disk is full");
    if (id != 0) ledger.completed.insert(id);
  }
  // Wait past a checkpoint (default interval 2 s): the server must stay up.
  std::this_thread::sleep_for(2500ms);
  ASSERT_EQ(server->WaitExit(0), -1) << "the server died on a full disk:\n" << server->StartLog();

  ASSERT_TRUE(fs::remove(filler));
  grpc::Status st;
  const auto resume_deadline = std::chrono::steady_clock::now() + 10s;
  std::string payload = MakePayload(rng, ++tag, 65536);
  uint64_t id = 0;
  do {
    st = PushOne(stub.get(), kQueues[0], payload, &id);
    if (!st.ok()) std::this_thread::sleep_for(100ms);
  } while (!st.ok() && std::chrono::steady_clock::now() < resume_deadline);
  ASSERT_TRUE(st.ok()) << "pushes still refused 10 s after 20 MiB were freed: "
                       << st.error_message();
  ledger.AddPush(id, payload);
  server->Kill();

  RestartAndCheck(server, flags, dir, ledger, "after restart on the tmpfs",
                  tmp.path() + "/server.log");
  if (HasFailure()) std::fprintf(stderr, "%s\n", server->Log().c_str());
  server->Kill();
  server.reset();  // before the unmount
}

}  // namespace
}  // namespace ringq
