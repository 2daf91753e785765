// End-to-end tests of the RQP server (proto/PROTOCOL.md): the real ringqd on
// free loopback ports, driven by raw sockets and the reference frame codec,
// so that every byte on the wire is the test's choice. Semantics shared with
// gRPC are tested through the client library (tests/client); this file is
// about the protocol edge and abuse: handshake, pipelining, ordering across
// shards, bad frames, limits, slow and idle peers. Each test opens with its goal.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ringq/v1/queue.pb.h"
#include "tests/support/server_process.h"
#include "uring/rqp_frame.h"

namespace ringq {
namespace {

namespace fr = uring::rqp;
using namespace std::chrono_literals;

struct Got {
  uint8_t kind = 0;
  uint8_t flags = 0;
  uint64_t id = 0;
  std::string body;
  uint32_t code() const {  // of ERROR / GOAWAY / SUBSCRIBE_END
    fr::StatusBody s;
    std::string why;
    const auto* p = reinterpret_cast<const uint8_t*>(body.data());
    return fr::ParseStatusBody({p, body.size()}, &s, &why) ? s.code : 999;
  }
  std::string message() const {
    fr::StatusBody s;
    std::string why;
    const auto* p = reinterpret_cast<const uint8_t*>(body.data());
    return fr::ParseStatusBody({p, body.size()}, &s, &why) ? s.message : why;
  }
};

std::string Frame(fr::Kind kind, uint64_t id, std::string_view body, uint8_t flags = 0) {
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(body.data());
  EXPECT_EQ(fr::AppendFrame({fr::KindByte(kind), flags, id}, {p, body.size()}, fr::kFrameBytesMaxLimit,
                            &out),
            fr::FrameError::kNone);
  return out;
}

std::string Msg(fr::Kind kind, uint64_t id, const google::protobuf::MessageLite& m) {
  return Frame(kind, id, m.SerializeAsString());
}

std::string Hello(std::string token = "") {
  fr::ClientHello h;
  h.token = std::move(token);
  std::string body;
  fr::AppendClientHelloBody(h, &body);
  return Frame(fr::Kind::kHello, 0, body);
}

std::string PushFrame(uint64_t id, const std::string& queue, const std::string& payload) {
  v1::PushRequest req;
  req.mutable_job()->set_queue(queue);
  req.mutable_job()->set_payload(payload);
  return Msg(fr::Kind::kPush, id, req);
}

// One raw RQP connection with a client-side decoder.
class Raw {
 public:
  // `source`: local address to bind (spreads many connections over 127/8).
  explicit Raw(int port, const char* source = nullptr) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (source != nullptr) {
      sockaddr_in src{};
      src.sin_family = AF_INET;
      inet_pton(AF_INET, source, &src.sin_addr);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) return;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Raw() { Close(); }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }

  bool Send(std::string_view bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // Next frame, or false on timeout, EOF (eof() tells) or a decode error.
  bool Read(Got* out, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (Next(out)) return true;
      if (eof_ || failed_) return false;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[65536];
      const ssize_t n = recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof_ = true;
        continue;
      }
      pending_.append(buf, static_cast<size_t>(n));
    }
  }

  // Reads frames until one with this id (and not a stream event) arrives.
  bool ReadAnswer(uint64_t id, Got* out, std::chrono::milliseconds timeout = 10s) {
    while (Read(out, timeout)) {
      if (out->id == id && (out->flags & fr::kFlagStream) == 0) return true;
    }
    return false;
  }

  // True once the server closed (after draining whatever it sent).
  bool WaitEof(std::chrono::milliseconds timeout = 10s) {
    Got g;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!eof_ && std::chrono::steady_clock::now() < deadline) {
      if (!Read(&g, 200ms) && failed_) return false;
    }
    return eof_;
  }
  bool eof() const { return eof_; }

  // Handshake; returns the server hello.
  fr::ServerHello Handshake() {
    fr::ServerHello sh;
    EXPECT_TRUE(Send(Hello()));
    Got g;
    EXPECT_TRUE(Read(&g));
    EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kServerHello)) << g.message();
    std::string why;
    const auto* p = reinterpret_cast<const uint8_t*>(g.body.data());
    EXPECT_TRUE(fr::ParseServerHello({p, g.body.size()}, &sh, &why)) << why;
    return sh;
  }

 private:
  bool Next(Got* out) {
    while (!pending_.empty() || dec_has_more_) {
      const auto* p = reinterpret_cast<const uint8_t*>(pending_.data());
      const auto step = dec_.Feed({p, pending_.size()});
      dec_has_more_ = false;
      if (step.event == fr::Decoder::Event::kFrame) {
        // The body may point into pending_: copy it before consuming.
        const auto& f = dec_.frame();
        out->kind = f.kind;
        out->flags = f.flags;
        out->id = f.request_id;
        out->body.assign(reinterpret_cast<const char*>(f.body.data()), f.body.size());
        pending_.erase(0, step.consumed);
        dec_has_more_ = true;
        return true;
      }
      pending_.erase(0, step.consumed);
      if (step.event == fr::Decoder::Event::kError) {
        if (dec_.error().fatal) {
          failed_ = true;
          ADD_FAILURE() << "client decoder: " << dec_.error().message;
          return false;
        }
        continue;
      }
      break;
    }
    return false;
  }

  static fr::DecoderOptions ClientOptions() {
    fr::DecoderOptions o;
    o.role = fr::Role::kClient;
    o.frame_bytes_max = fr::kFrameBytesMaxLimit;
    return o;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  bool failed_ = false;
  bool dec_has_more_ = false;
  std::string pending_;
  fr::Decoder dec_{ClientOptions()};
};

int RqpPort(testing::ServerProcess& s) {
  const std::string log = s.Log();
  const std::string key = "RQP listening on 127.0.0.1:";
  const size_t at = log.find(key);
  return at == std::string::npos ? 0 : std::atoi(log.c_str() + at + key.size());
}

uint64_t RssKb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  }
  return 0;
}

class RqpServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start({"--shards=2"}); }

  void Start(std::vector<std::string> flags) {
    flags.push_back("--rqp-port=0");
    server_ = std::make_unique<testing::ServerProcess>(RINGQD_PATH, std::move(flags));
    ASSERT_TRUE(server_->Start()) << server_->Log();
    port_ = RqpPort(*server_);
    ASSERT_GT(port_, 0) << server_->Log();
  }

  // A fresh connection after the handshake.
  std::unique_ptr<Raw> Connect() {
    auto c = std::make_unique<Raw>(port_);
    EXPECT_TRUE(c->connected());
    c->Handshake();
    return c;
  }

  // The server still serves: a new connection pushes and reads stats.
  void ExpectHealthy() {
    auto c = Connect();
    ASSERT_TRUE(c->Send(PushFrame(1, "health", "x")));
    Got g;
    ASSERT_TRUE(c->ReadAnswer(1, &g));
    EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
  }

  // The ringqd whose command line names our data directory.
  int ServerPid() {
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(e.path() / "cmdline");
      std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (cmd.find(server_->data_dir()) != std::string::npos && cmd.find("ringqd") != std::string::npos) {
        return std::stoi(name);
      }
    }
    return -1;
  }

  std::unique_ptr<testing::ServerProcess> server_;
  int port_ = 0;
};

// Goal: the handshake announces the server's limits and PING echoes its body.
TEST_F(RqpServerTest, HelloAnnouncesLimitsAndPingEchoes) {
  Raw c(port_);
  ASSERT_TRUE(c.connected());
  const fr::ServerHello sh = c.Handshake();
  EXPECT_EQ(sh.version, 1);
  EXPECT_EQ(sh.frame_bytes_max, 4u << 20);
  EXPECT_EQ(sh.inflight_max, 1024u);
  EXPECT_GT(sh.batch_max, 0u);
  ASSERT_TRUE(c.Send(Frame(fr::Kind::kPing, 9, "abc")));
  Got g;
  ASSERT_TRUE(c.ReadAnswer(9, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kPong));
  EXPECT_EQ(g.body, "abc");
}

// Goal: push, fetch, ack and stats over RQP behave as over gRPC.
TEST_F(RqpServerTest, PushFetchAckStats) {
  auto c = Connect();
  ASSERT_TRUE(c->Send(PushFrame(1, "q1", "hello")));
  Got g;
  ASSERT_TRUE(c->ReadAnswer(1, &g));
  ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
  v1::PushResponse pr;
  ASSERT_TRUE(pr.ParseFromString(g.body));
  EXPECT_NE(pr.id(), 0u);

  v1::FetchRequest fq;
  fq.set_queue("q1");
  fq.set_max(10);
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kFetch, 2, fq)));
  ASSERT_TRUE(c->ReadAnswer(2, &g));
  ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kFetchResponse)) << g.message();
  v1::FetchResponse fresp;
  ASSERT_TRUE(fresp.ParseFromString(g.body));
  ASSERT_EQ(fresp.deliveries_size(), 1);
  EXPECT_EQ(fresp.deliveries(0).job().id(), pr.id());
  EXPECT_EQ(fresp.deliveries(0).job().payload(), "hello");

  v1::AckRequest ack;
  ack.set_id(pr.id());
  ack.set_lease_token(fresp.deliveries(0).lease_token());
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kAck, 3, ack)));
  ASSERT_TRUE(c->ReadAnswer(3, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kAckResponse)) << g.message();

  // A second ack of the same lease: FAILED_PRECONDITION, as over gRPC; the connection stays.
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kAck, 4, ack)));
  ASSERT_TRUE(c->ReadAnswer(4, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));

  v1::StatsRequest sq;
  sq.set_queue("q1");
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kStats, 5, sq)));
  ASSERT_TRUE(c->ReadAnswer(5, &g));
  ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kStatsResponse)) << g.message();
  v1::StatsResponse st;
  ASSERT_TRUE(st.ParseFromString(g.body));
  ASSERT_EQ(st.queues_size(), 1);
  EXPECT_EQ(st.queues(0).completed(), 1u);
}

// Goal: thousands of pipelined pushes to queues on both shards, one write,
// each answered exactly once with its id, and per-queue order is kept.
TEST_F(RqpServerTest, PipelinedPushesAcrossShardsAnsweredOnce) {
  auto c = Connect();
  constexpr int kN = 5000;
  std::string batch;
  for (int i = 1; i <= kN; ++i) {
    batch += PushFrame(i, "pq" + std::to_string(i % 20), std::to_string(i));
    if (i % 1000 == 0) {
      // Bursts of 1000 in one write (under inflight_max 1024), then their answers.
      ASSERT_TRUE(c->Send(batch));
      batch.clear();
      std::set<uint64_t> seen;
      Got g;
      while (seen.size() < 1000 && c->Read(&g)) {
        ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
        ASSERT_TRUE(seen.insert(g.id).second) << "answered twice: " << g.id;
      }
      ASSERT_EQ(seen.size(), 1000u);
      EXPECT_EQ(*seen.begin(), static_cast<uint64_t>(i - 999));
      EXPECT_EQ(*seen.rbegin(), static_cast<uint64_t>(i));
    }
  }
  // Order per queue: fetch one queue and see its payloads ascending.
  v1::FetchRequest fq;
  fq.set_queue("pq7");
  fq.set_max(1000);
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kFetch, 90'000, fq)));
  Got g;
  ASSERT_TRUE(c->ReadAnswer(90'000, &g));
  v1::FetchResponse fresp;
  ASSERT_TRUE(fresp.ParseFromString(g.body));
  ASSERT_EQ(fresp.deliveries_size(), kN / 20);
  for (int i = 1; i < fresp.deliveries_size(); ++i) {
    EXPECT_LT(std::stoi(fresp.deliveries(i - 1).job().payload()),
              std::stoi(fresp.deliveries(i).job().payload()));
  }
}

// Goal: more than inflight_max requests in flight: the extra one gets ERROR
// RESOURCE_EXHAUSTED and nothing is done; the connection stays; a request id
// reused while in flight closes the connection.
TEST_F(RqpServerTest, InflightLimitAndDuplicateIds) {
  server_->Stop();
  Start({"--shards=1", "--rqp-inflight-max=16"});
  auto c = Connect();
  v1::FetchRequest fq;
  fq.set_queue("empty");
  fq.set_max(1);
  fq.set_wait_ms(1500);
  std::string burst;
  for (int i = 1; i <= 16; ++i) burst += Msg(fr::Kind::kFetch, i, fq);
  burst += PushFrame(17, "empty", "x");
  ASSERT_TRUE(c->Send(burst));
  Got g;
  ASSERT_TRUE(c->ReadAnswer(17, &g, 1000ms));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.code(), 8u) << g.message();
  EXPECT_NE(g.message().find("inflight_max"), std::string::npos) << g.message();
  // The 16 waiting fetches end empty after their wait.
  std::set<uint64_t> answered;
  while (answered.size() < 16 && c->Read(&g, 5s)) {
    EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kFetchResponse));
    answered.insert(g.id);
  }
  EXPECT_EQ(answered.size(), 16u);
  // Nothing was pushed by the refused request.
  v1::StatsRequest sq;
  sq.set_queue("empty");
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kStats, 40, sq)));
  ASSERT_TRUE(c->ReadAnswer(40, &g));
  v1::StatsResponse st;
  ASSERT_TRUE(st.ParseFromString(g.body));
  EXPECT_EQ(st.totals().waiting(), 0u);

  // Two fetches with one id: the second is a protocol error; the connection closes.
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kFetch, 50, fq) + Msg(fr::Kind::kFetch, 50, fq)));
  ASSERT_TRUE(c->ReadAnswer(0, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.code(), 3u);
  EXPECT_TRUE(c->WaitEof());
  ExpectHealthy();
}

// Goal: garbage bytes get a connection-level ERROR and a close; others are fine.
TEST_F(RqpServerTest, GarbageIsRefused) {
  std::mt19937 rng(42);
  for (int round = 0; round < 20; ++round) {
    Raw c(port_);
    ASSERT_TRUE(c.connected());
    std::string junk(1 + rng() % 4096, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng());
    if (round % 2 == 1) junk = Hello() + junk;  // garbage after a valid handshake
    (void)c.Send(junk);
    EXPECT_TRUE(c.WaitEof()) << "round " << round;
  }
  ExpectHealthy();
}

// Goal: a seeded soup of valid, mutated and random frames over many
// connections (every kind, bodies that are and are not protobuf, flipped
// header bytes) never takes the server down or stalls other clients.
TEST_F(RqpServerTest, FrameSoupLeavesTheServerHealthy) {
  const uint64_t seed = std::getenv("RINGQ_SOUP_SEED") ? std::stoull(std::getenv("RINGQ_SOUP_SEED")) : 7;
  std::mt19937_64 rng(seed);
  const uint8_t kinds[] = {0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
                           0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x20, 0x21, 0x22, 0x3F, 0x90};
  auto random_bytes = [&](size_t n) {
    std::string b(n, '\0');
    for (auto& ch : b) ch = static_cast<char>(rng());
    return b;
  };
  for (int conn = 0; conn < 100; ++conn) {
    Raw c(port_);
    ASSERT_TRUE(c.connected());
    std::string out = Hello();
    for (int i = 0; i < 50; ++i) {
      const uint8_t kind = kinds[rng() % std::size(kinds)];
      const uint64_t id = rng() % 8;  // small ids: collisions and zeros on purpose
      std::string body;
      switch (rng() % 4) {
        case 0: body = PushFrame(1, "soup" + std::to_string(rng() % 4), random_bytes(rng() % 64)).substr(fr::kHeaderBytes); break;
        case 1: body = random_bytes(rng() % 256); break;
        case 2: {
          v1::SubscribeRequest sr;
          sr.mutable_open()->add_queues("soup0");
          sr.mutable_open()->set_credits(static_cast<uint32_t>(rng() % 3));
          sr.add_acks()->set_id(rng());
          body = sr.SerializeAsString();
          break;
        }
        default: break;  // empty
      }
      uint8_t h[fr::kHeaderBytes];
      fr::WriteHeaderUnchecked(static_cast<uint32_t>(12 + body.size()), kind,
                               rng() % 16 == 0 ? static_cast<uint8_t>(rng()) : 0,
                               rng() % 32 == 0 ? static_cast<uint16_t>(rng()) : 0, id, h);
      std::string frame(reinterpret_cast<char*>(h), sizeof h);
      frame += body;
      if (rng() % 40 == 0) frame[rng() % frame.size()] ^= static_cast<char>(1 + rng() % 255);
      out += frame;
    }
    (void)c.Send(out);
    if (conn % 2 == 0) c.ShutdownWrite();
    // Read whatever comes for a moment: answers, errors, a close.
    Got g;
    const auto until = std::chrono::steady_clock::now() + 50ms;
    while (std::chrono::steady_clock::now() < until && c.Read(&g, 20ms)) {
    }
  }
  ExpectHealthy();
}

// Goal: a frame claiming 4 GiB is refused before anything is buffered.
TEST_F(RqpServerTest, FourGigabyteClaim) {
  auto c = Connect();
  uint8_t h[fr::kHeaderBytes];
  fr::WriteHeaderUnchecked(0xFFFFFFFFu, fr::KindByte(fr::Kind::kPush), 0, 0, 1, h);
  ASSERT_TRUE(c->Send({reinterpret_cast<char*>(h), sizeof h}));
  Got g;
  ASSERT_TRUE(c->Read(&g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.id, 0u);
  EXPECT_EQ(g.code(), 8u) << g.message();
  EXPECT_TRUE(c->WaitEof());
  ExpectHealthy();
}

// Goal: an unknown kind is answered UNIMPLEMENTED with its id and skipped;
// a bad protobuf body is INVALID_ARGUMENT; the connection stays for both.
TEST_F(RqpServerTest, UnknownKindAndBadBodyKeepTheConnection) {
  auto c = Connect();
  uint8_t h[fr::kHeaderBytes];
  fr::WriteHeaderUnchecked(12 + 5, 0x3F, 0, 0, 77, h);
  ASSERT_TRUE(c->Send(std::string(reinterpret_cast<char*>(h), sizeof h) + "12345"));
  Got g;
  ASSERT_TRUE(c->ReadAnswer(77, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.code(), 12u) << g.message();
  ASSERT_TRUE(c->Send(Frame(fr::Kind::kPush, 78, "\xff\xff\xff\xff")));
  ASSERT_TRUE(c->ReadAnswer(78, &g));
  EXPECT_EQ(g.code(), 3u) << g.message();
  EXPECT_NE(g.message().find("PushRequest"), std::string::npos) << g.message();
  // Invalid content: an empty queue name, the same status gRPC gives.
  ASSERT_TRUE(c->Send(PushFrame(79, "", "x")));
  ASSERT_TRUE(c->ReadAnswer(79, &g));
  EXPECT_EQ(g.code(), 3u) << g.message();
  ASSERT_TRUE(c->Send(Frame(fr::Kind::kPing, 80, "")));
  ASSERT_TRUE(c->ReadAnswer(80, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kPong));
}

// Goal: the first frame must be HELLO; a request before it closes the connection.
TEST_F(RqpServerTest, RequestBeforeHelloIsRefused) {
  Raw c(port_);
  ASSERT_TRUE(c.Send(PushFrame(1, "q", "x")));
  Got g;
  ASSERT_TRUE(c.Read(&g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.code(), 9u) << g.message();
  EXPECT_TRUE(c.WaitEof());
}

// Goal: a truncated frame then EOF closes that connection only, and is counted.
TEST_F(RqpServerTest, TruncatedFrameThenEof) {
  auto c = Connect();
  const std::string push = PushFrame(1, "t", "payload");
  ASSERT_TRUE(c->Send(push.substr(0, push.size() / 2)));
  c->ShutdownWrite();
  EXPECT_TRUE(c->WaitEof());
  ExpectHealthy();
}

// Goal: a client that pipelines requests and half-closes still gets every
// answer (PROTOCOL.md section 9), then EOF.
TEST_F(RqpServerTest, HalfCloseCollectsAnswers) {
  auto c = Connect();
  std::string burst;
  for (int i = 1; i <= 200; ++i) burst += PushFrame(i, "half" + std::to_string(i % 3), "x");
  ASSERT_TRUE(c->Send(burst));
  c->ShutdownWrite();
  std::set<uint64_t> answered;
  Got g;
  while (c->Read(&g)) {
    EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
    answered.insert(g.id);
  }
  EXPECT_TRUE(c->eof());
  EXPECT_EQ(answered.size(), 200u);
}

// Goal: frames split at every byte boundary decode the same.
TEST_F(RqpServerTest, SplitAtEveryByte) {
  auto c = Connect();
  const std::string push = PushFrame(1, "split", "0123456789");
  Got g;
  for (size_t cut = 1; cut < push.size(); ++cut) {
    std::string f = PushFrame(1000 + cut, "split", "0123456789");
    ASSERT_TRUE(c->Send(f.substr(0, cut)));
    std::this_thread::sleep_for(1ms);  // likely a separate segment
    ASSERT_TRUE(c->Send(f.substr(cut)));
    ASSERT_TRUE(c->ReadAnswer(1000 + cut, &g)) << "cut " << cut;
    ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
  }
  // And a whole burst delivered one byte per send.
  std::string burst = PushFrame(5001, "split", "a") + Frame(fr::Kind::kPing, 5002, "zz");
  for (char ch : burst) ASSERT_TRUE(c->Send(std::string_view(&ch, 1)));
  ASSERT_TRUE(c->ReadAnswer(5002, &g));
  EXPECT_EQ(g.body, "zz");
}

// Goal: pipelining thousands of requests then closing at once leaves the
// server healthy (answers to a gone peer are dropped).
TEST_F(RqpServerTest, PipelineThenCloseAbruptly) {
  for (int round = 0; round < 5; ++round) {
    Raw c(port_);
    std::string burst = Hello();
    for (int i = 1; i <= 1000; ++i) burst += PushFrame(i, "abrupt" + std::to_string(i % 7), "x");
    ASSERT_TRUE(c.Send(burst));
    c.Close();
  }
  ExpectHealthy();
}

// Goal: a subscription over RQP receives exactly the pushed jobs within its
// credits, acks them in updates (results come back in events), and
// SUBSCRIBE_CLOSE ends it with SUBSCRIBE_END OK after releasing nothing.
TEST_F(RqpServerTest, SubscribeWithCreditsAndAcks) {
  auto c = Connect();
  v1::SubscribeRequest open;
  open.mutable_open()->add_queues("sub");
  open.mutable_open()->set_credits(5);
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kSubscribeOpen, 100, open)));
  Got g;
  ASSERT_TRUE(c->Read(&g));
  ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kSubscribeEvent)) << g.message();
  EXPECT_EQ(g.flags, fr::kFlagStream);
  EXPECT_EQ(g.id, 100u);

  std::string pushes;
  for (int i = 1; i <= 12; ++i) pushes += PushFrame(i, "sub", std::to_string(i));
  ASSERT_TRUE(c->Send(pushes));
  std::map<uint64_t, uint64_t> leased;  // id -> token
  int pushed = 0, acked_results = 0;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((pushed < 12 || leased.size() < 12 || acked_results < 12) &&
         std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(c->Read(&g)) << "pushed " << pushed << " leased " << leased.size();
    if (g.kind == fr::KindByte(fr::Kind::kPushResponse)) {
      ++pushed;
      continue;
    }
    ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kSubscribeEvent)) << g.message();
    v1::SubscribeResponse ev;
    ASSERT_TRUE(ev.ParseFromString(g.body));
    acked_results += ev.results_size();
    for (const auto& r : ev.results()) EXPECT_FALSE(r.has_error()) << r.error().message();
    v1::SubscribeRequest update;
    for (const auto& d : ev.deliveries()) {
      ASSERT_TRUE(leased.emplace(d.job().id(), d.lease_token()).second) << "delivered twice";
      auto* a = update.add_acks();
      a->set_id(d.job().id());
      a->set_lease_token(d.lease_token());
    }
    // Never more deliveries un-acked than credits: we ack each event at once.
    EXPECT_LE(ev.deliveries_size(), 5);
    if (update.acks_size() > 0) {
      ASSERT_TRUE(c->Send(Msg(fr::Kind::kSubscribeUpdate, 100, update)));
    }
  }
  EXPECT_EQ(leased.size(), 12u);
  EXPECT_EQ(acked_results, 12);
  ASSERT_TRUE(c->Send(Frame(fr::Kind::kSubscribeClose, 100, "")));
  ASSERT_TRUE(c->ReadAnswer(100, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kSubscribeEnd));
  EXPECT_EQ(g.code(), 0u) << g.message();
  // An update for the ended stream is dropped (no answer); the connection stays.
  ASSERT_TRUE(c->Send(Frame(fr::Kind::kSubscribeClose, 100, "")));
  ASSERT_TRUE(c->Send(Frame(fr::Kind::kPing, 101, "")));
  ASSERT_TRUE(c->ReadAnswer(101, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kPong));
}

// Goal: a bad open is an ERROR with the stream's id and no stream exists.
TEST_F(RqpServerTest, BadSubscribeOpen) {
  auto c = Connect();
  v1::SubscribeRequest open;
  open.mutable_open()->add_queues("sub");
  open.mutable_open()->set_credits(0);
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kSubscribeOpen, 7, open)));
  Got g;
  ASSERT_TRUE(c->ReadAnswer(7, &g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.code(), 3u) << g.message();
  // The id is free again: a valid open with it works.
  open.mutable_open()->set_credits(1);
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kSubscribeOpen, 7, open)));
  ASSERT_TRUE(c->Read(&g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kSubscribeEvent)) << g.message();
}

// Goal: a subscriber that never reads cannot make the server buffer without
// bound: its output stops growing (its core holds at most its credits), the
// connection closing releases its jobs to another worker, and everyone else
// is served meanwhile.
TEST_F(RqpServerTest, NonReadingSubscriberIsBounded) {
  server_->Stop();
  Start({"--shards=2", "--rqp-send-queue-bytes-max=65536"});
  auto slow = std::make_unique<Raw>(port_);
  slow->Handshake();
  int rcv = 4096;
  setsockopt(slow->fd(), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  v1::SubscribeRequest open;
  open.mutable_open()->add_queues("slow");
  open.mutable_open()->set_credits(400);
  ASSERT_TRUE(slow->Send(Msg(fr::Kind::kSubscribeOpen, 1, open)));

  auto producer = Connect();
  const std::string payload(64 << 10, 'p');
  const int pid = ServerPid();
  ASSERT_GT(pid, 0);
  Got g;
  for (int i = 1; i <= 400; ++i) {
    ASSERT_TRUE(producer->Send(PushFrame(i, "slow", payload)));
    ASSERT_TRUE(producer->ReadAnswer(i, &g));
    ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
  }
  std::this_thread::sleep_for(500ms);
  const uint64_t rss1 = RssKb(pid);
  // Others are served while the slow one sits on ~26 MB of deliveries.
  ExpectHealthy();
  std::this_thread::sleep_for(500ms);
  const uint64_t rss2 = RssKb(pid);
  EXPECT_LT(rss2, rss1 + 8 * 1024) << "server memory keeps growing: " << rss1 << " -> " << rss2 << " kB";

  // The slow worker goes away: its leased jobs come back for another worker.
  slow->Close();
  auto worker = Connect();
  open.mutable_open()->set_credits(1000);
  ASSERT_TRUE(worker->Send(Msg(fr::Kind::kSubscribeOpen, 5, open)));
  std::set<uint64_t> got;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (got.size() < 400 && std::chrono::steady_clock::now() < deadline) {
    if (!worker->Read(&g, 2s)) continue;
    if (g.kind != fr::KindByte(fr::Kind::kSubscribeEvent)) continue;
    v1::SubscribeResponse ev;
    ASSERT_TRUE(ev.ParseFromString(g.body));
    for (const auto& d : ev.deliveries()) got.insert(d.job().id());
  }
  EXPECT_EQ(got.size(), 400u);
}

// Goal: where io_uring cannot be set up (here: seccomp makes io_uring_setup
// fail, as an old kernel, kernel.io_uring_disabled or a container's profile
// would), ringqd chooses the epoll backend by itself, says why, and serves
// RQP and its WAL on it.
TEST_F(RqpServerTest, FallsBackToEpollWhereIoUringCannotBeSetUp) {
  server_->Stop();
  server_ = std::make_unique<testing::ServerProcess>(
      RINGQD_PATH, std::vector<std::string>{"--shards=2", "--rqp-port=0"});
  server_->DenyIoUring();
  ASSERT_TRUE(server_->Start()) << server_->Log();
  const std::string log = server_->StartLog();
  EXPECT_NE(log.find("I/O backend: epoll (io_uring_setup failed"), std::string::npos) << log;
  EXPECT_NE(log.find("(epoll, 2 shards)"), std::string::npos) << log;
  port_ = RqpPort(*server_);
  ASSERT_GT(port_, 0) << log;
  auto c = Connect();
  Got g;
  for (uint32_t i = 1; i <= 100; ++i) ASSERT_TRUE(c->Send(PushFrame(i, "fallback", "x")));
  for (uint32_t i = 1; i <= 100; ++i) {
    ASSERT_TRUE(c->ReadAnswer(i, &g));
    ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kPushResponse)) << g.message();
  }
  // Durable on the portable WAL: the jobs are there after a restart.
  c.reset();
  ASSERT_EQ(server_->Stop(), 0) << server_->Log();
  ASSERT_TRUE(server_->Start()) << server_->Log();
  EXPECT_NE(server_->StartLog().find("recovered 100 jobs"), std::string::npos) << server_->Log();
}

// Goal: RINGQ_IO=uring where io_uring cannot be set up is a clear refusal to
// start, not a silent fallback.
TEST_F(RqpServerTest, ForcedIoUringWhereItCannotBeSetUpRefusesToStart) {
  server_->Stop();
  server_ = std::make_unique<testing::ServerProcess>(
      RINGQD_PATH, std::vector<std::string>{"--shards=2", "--rqp-port=0"});
  server_->DenyIoUring();
  server_->SetEnv("RINGQ_IO", "uring");
  EXPECT_FALSE(server_->Start(5'000));
  EXPECT_EQ(server_->exit_status(), 1);
  EXPECT_NE(server_->Log().find("RINGQ_IO=uring but io_uring cannot be set up here"),
            std::string::npos)
      << server_->Log();
}

// Goal: ringqd built with RINGQ_JEMALLOC runs on jemalloc (it is what the
// hot path's allocation cost and the benchmarks assume) and says so at start.
TEST_F(RqpServerTest, StartupLogNamesTheAllocator) {
  const std::string log = server_->StartLog();
#if RINGQ_JEMALLOC
  EXPECT_NE(log.find("allocator: jemalloc 5."), std::string::npos) << log;
#else
  EXPECT_NE(log.find("allocator: glibc"), std::string::npos) << log;
#endif
}

// Goal: 10,000 idle connections (sources spread over 127.0.0.0/8) are held;
// the server serves others meanwhile; once they close, its connection count
// and memory return to baseline.
TEST_F(RqpServerTest, TenThousandIdleConnections) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  const rlim_t want = 10'000 + 512;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 2 * want);
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  if (rl.rlim_cur < want) GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << rl.rlim_max << " < " << want;
  // The server inherits the raised limit: restart it.
  server_->Stop();
  Start({"--shards=2"});
  const int pid = ServerPid();
  ASSERT_GT(pid, 0);
  ExpectHealthy();
  const uint64_t base = RssKb(pid);

  std::vector<std::unique_ptr<Raw>> idle;
  idle.reserve(10'000);
  char src[32];
  for (int i = 0; i < 10'000; ++i) {
    std::snprintf(src, sizeof src, "127.0.%d.%d", 1 + i / 250, 1 + i % 250);
    auto c = std::make_unique<Raw>(port_, src);
    ASSERT_TRUE(c->connected()) << i << ": " << std::strerror(errno);
    if (i % 2 == 0) {  // half say hello, half say nothing
      ASSERT_TRUE(c->Send(Hello()));
    }
    idle.push_back(std::move(c));
  }
  ExpectHealthy();
  const uint64_t loaded = RssKb(pid);
  for (auto& c : idle) c->Close();
  idle.clear();
  // The server gives the memory back within a few seconds of the closes.
  // Slack: the pages of the io_uring receive buffer pool that the hellos
  // touched (a fixed pool: 256 buffers per shard) and allocator residue.
  constexpr uint64_t kSlackKb = 6 * 1024;
  uint64_t after = 0;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(200ms);
    after = RssKb(pid);
    if (after < base + kSlackKb) break;
  }
  ExpectHealthy();
  std::printf("RSS kB: baseline %llu, with 10,000 idle connections %llu, after %llu\n",
              static_cast<unsigned long long>(base), static_cast<unsigned long long>(loaded),
              static_cast<unsigned long long>(after));
#if defined(__SANITIZE_ADDRESS__)
  // ASan's allocator keeps freed memory in quarantine and ignores trims:
  // RSS says nothing about the server's own memory in this build.
  std::printf("RSS bound not checked under AddressSanitizer\n");
#else
  EXPECT_LT(after, base + kSlackKb) << "memory did not return to baseline";
#endif
}

// Goal: connections past --rqp-connections-max get ERROR UNAVAILABLE and a close.
TEST_F(RqpServerTest, ConnectionLimit) {
  server_->Stop();
  Start({"--shards=2", "--rqp-connections-max=4"});
  std::vector<std::unique_ptr<Raw>> held;
  for (int i = 0; i < 4; ++i) held.push_back(Connect());
  Raw extra(port_);
  Got g;
  ASSERT_TRUE(extra.Read(&g));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_EQ(g.code(), 14u) << g.message();
  EXPECT_TRUE(extra.WaitEof());
  held.pop_back();
  std::this_thread::sleep_for(200ms);
  ExpectHealthy();
}

// Goal: a connection that never says HELLO is closed after the timeout.
TEST_F(RqpServerTest, HelloTimeout) {
  server_->Stop();
  Start({"--shards=1", "--rqp-hello-timeout-ms=300"});
  Raw c(port_);
  ASSERT_TRUE(c.connected());
  Got g;
  ASSERT_TRUE(c.Read(&g, 5s));
  EXPECT_EQ(g.kind, fr::KindByte(fr::Kind::kError));
  EXPECT_TRUE(c.WaitEof(5s));
}

// Goal: SIGTERM sends GOAWAY, answers what was read, ends streams with
// UNAVAILABLE and closes.
TEST_F(RqpServerTest, GoawayOnShutdown) {
  auto c = Connect();
  v1::SubscribeRequest open;
  open.mutable_open()->add_queues("bye");
  open.mutable_open()->set_credits(1);
  ASSERT_TRUE(c->Send(Msg(fr::Kind::kSubscribeOpen, 3, open)));
  Got g;
  ASSERT_TRUE(c->Read(&g));
  ASSERT_EQ(g.kind, fr::KindByte(fr::Kind::kSubscribeEvent));
  std::thread stopper([&] { server_->Stop(); });
  bool goaway = false, end = false;
  while (c->Read(&g, 10s)) {
    if (g.kind == fr::KindByte(fr::Kind::kGoaway)) goaway = true;
    if (g.kind == fr::KindByte(fr::Kind::kSubscribeEnd)) {
      end = true;
      EXPECT_EQ(g.code(), 14u);
    }
  }
  stopper.join();
  EXPECT_TRUE(goaway);
  EXPECT_TRUE(end);
  EXPECT_TRUE(c->eof());
}

}  // namespace
}  // namespace ringq
