// ringqd: parses flags, recovers the state (RocksDB + WAL replay), starts the
// engine and the gRPC server, reports ready, waits for SIGINT/SIGTERM, then
// drains: the gRPC server stops taking calls and gives those in flight a grace
// period, the shards answer what they accepted once it is durable, and the
// checkpointers flush.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <chrono>
#include <memory>

#include "service/engine/allocator.h"
#include "service/engine/engine.h"
#include "service/engine/engine_metrics.h"
#include "service/engine/journal_probe.h"
#include "service/flags.h"
#include "service/grpc/probe.h"
#include "service/grpc/server.h"
#include "service/http/http_server.h"
#include "service/http/server_metrics.h"
#include "service/log.h"
#include "service/metrics/registry.h"
#include "service/rqp/server.h"
#include "storage/recovery.h"
#include "storage/store.h"
#include "storage/wal_journal.h"
#include "uring/ring.h"
#include "uring/wal.h"

namespace {

// One server per data directory: a second one would corrupt the first's files.
int LockDataDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    ringq::LogLine("cannot create --data-dir %s: %s", dir.c_str(), ec.message().c_str());
    return -1;
  }
  const std::string path = dir + "/LOCK";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ringq::LogLine("cannot lock %s (%s): is another ringqd using this --data-dir?", path.c_str(),
                   std::strerror(errno));
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  ringq::ServerFlags flags = ringq::ParseFlags(argc, argv);

  // Signals are taken by sigwait below; every thread started after this inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const int lock_fd = LockDataDir(flags.data_dir);
  if (lock_fd < 0) return 1;

  ringq::LogLine("starting ringqd %s: %u shards, data dir %s", "0.1.0", flags.shards,
                 flags.data_dir.c_str());

  // The HTTP port comes up first: /healthz answers and /readyz says 503
  // during recovery. Collectors join the registry as their components exist.
  ringq::metrics::Registry registry;
  ringq::http::ServerMetrics server_metrics("0.1.0");
  ringq::engine::JournalProbes wal_probes(flags.shards);
  ringq::http::HttpOptions ho;
  ho.host = flags.host;
  ho.port = flags.http_port;
  ringq::http::HttpServer http_server(ho, registry);
  registry.Add(&http_server);
  registry.Add(&server_metrics);
  registry.Add(&wal_probes);
  if (std::string error; !http_server.Start(&error)) {
    ringq::LogLine("%s", error.c_str());
    return 1;
  }
  ringq::LogLine("HTTP listening on %s:%u (/metrics, /healthz, /readyz)", flags.host.c_str(),
                 http_server.port());

  // Storage first: recovery must finish before anything is served.
  const auto recovery_start = std::chrono::steady_clock::now();
  auto opened = ringq::storage::Store::Open(ringq::storage::DbDir(flags.data_dir));
  if (!opened.ok()) {
    ringq::LogLine("cannot open the store: %s", opened.status().message().c_str());
    return 1;
  }
  std::unique_ptr<ringq::storage::Store> store = std::move(opened.value());
  server_metrics.SetRocksdbLiveDataSource([&store] { return store->LiveDataBytes(); });
  struct UnsetSource {  // before `store` is destroyed, on every return path
    ringq::http::ServerMetrics& metrics;
    ~UnsetSource() { metrics.SetRocksdbLiveDataSource(nullptr); }
  } unset_source{server_metrics};
  ringq::storage::RecoveryOptions ro;
  ro.data_dir = flags.data_dir;
  ro.shards = flags.shards;
  ro.repair = flags.repair_wal;
  ro.archive = flags.wal_archive;
  ro.log = [](const std::string& line) { ringq::LogLine("%s", line.c_str()); };
  auto recovered = ringq::storage::Recover(*store, ro);
  if (!recovered.ok()) {
    ringq::LogLine("recovery failed: %s", recovered.status().message().c_str());
    return 1;
  }
  uint64_t replayed = 0, live = 0;
  for (const auto& s : recovered->shards) {
    replayed += s.replayed_records;
    live += s.jobs.size();
  }

  std::string why;
  const ringq::uring::IoBackendKind backend = ringq::uring::ChooseIoBackend(&why);
  const auto durability = flags.durability == "batch" ? ringq::uring::Durability::kBatch
                                                      : ringq::uring::Durability::kSync;
  ringq::LogLine("I/O backend: %s (%s)", ringq::uring::IoBackendName(backend), why.c_str());
  ringq::LogLine("allocator: %s", ringq::engine::AllocatorName().c_str());
  server_metrics.SetIoBackend(ringq::uring::IoBackendName(backend));
  server_metrics.SetDurability(flags.durability);
  if (durability == ringq::uring::Durability::kSync) {
    ringq::LogLine("durability: sync (every reply after fdatasync of its WAL record)");
  } else {
    ringq::LogLine("durability: batch (replies after write; fdatasync at most every %u ms: a "
                   "crash of the machine may lose the last %u ms)",
                   flags.sync_interval_ms, flags.sync_interval_ms);
  }

  // With io_uring each shard has one ring for its WAL and its network I/O
  // (uring/ring.h): one io_uring_enter per loop iteration carries both.
  std::vector<std::unique_ptr<ringq::uring::Ring>> rings;
  std::vector<ringq::uring::Ring*> ring_ptrs;
  if (backend == ringq::uring::IoBackendKind::kUring) {
    ringq::uring::RingOptions rio;
    rio.sqpoll = flags.io_sqpoll;
    for (uint32_t i = 0; i < flags.shards; ++i) {
      std::string ring_why;
      auto ring = ringq::uring::Ring::Create(rio, &ring_why);
      if (!ring) {
        ringq::LogLine("cannot set up the io_uring of shard %u: %s", i, ring_why.c_str());
        return 1;
      }
      ring_ptrs.push_back(ring.get());
      rings.push_back(std::move(ring));
    }
  }

  ringq::engine::SystemClock clock;
  ringq::engine::EngineOptions eo;
  eo.shards = flags.shards;
  eo.inbox_max = flags.inbox_max;
  eo.limits = flags.limits;
  auto journals = [&](uint32_t shard) -> std::unique_ptr<ringq::engine::Journal> {
    const auto& sr = recovered->shards[shard];
    ringq::uring::WalOptions wo;
    wo.dir = ringq::storage::WalDir(flags.data_dir, shard);
    wo.segment_bytes = flags.wal_segment_bytes;
    wo.durability = durability;
    wo.sync_interval_ms = flags.sync_interval_ms;
    wo.wal_bytes_max = flags.wal_bytes_max;
    wo.backend = backend;
    wo.ring = ring_ptrs.empty() ? nullptr : ring_ptrs[shard];
    wo.group_commit = flags.group_commit;
    wo.archive = flags.wal_archive;
    ringq::storage::CheckpointOptions co;
    co.interval_ms = flags.checkpoint_interval_ms;
    return std::make_unique<ringq::storage::WalJournal>(
        std::make_unique<ringq::uring::Wal>(wo, sr.next_lsn),
        std::make_unique<ringq::storage::Checkpointer>(*store, shard, sr.next_lsn - 1, co),
        flags.data_dir, flags.disk_free_min_bytes, &wal_probes.shard(shard));
  };
  ringq::engine::Engine engine(eo, clock, journals);
  ringq::engine::EngineMetricsOptions emo;
  emo.queue_labels_max = flags.metrics_queue_labels_max;
  emo.enabled = flags.metrics;
  ringq::engine::EngineMetrics engine_metrics(engine, emo);  // before Start: configures probes
  for (uint32_t i = 0; i < flags.shards; ++i) {
    auto& sr = recovered->shards[i];
    engine.shard(i).scheduler().Restore(std::move(sr.jobs), sr.paused_queues);
  }
  const double recovery_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - recovery_start).count();
  ringq::LogLine("recovered %llu jobs (%llu WAL records replayed) in %.3f s",
                 static_cast<unsigned long long>(live), static_cast<unsigned long long>(replayed),
                 recovery_s);
  ringq::rqp::RqpOptions rqo;
  rqo.enabled = flags.rqp;
  rqo.host = flags.host;
  rqo.port = static_cast<uint16_t>(flags.rqp_port);
  rqo.connections_max = flags.rqp_connections_max;
  rqo.inflight_max = flags.rqp_inflight_max;
  rqo.frame_bytes_max = flags.rqp_frame_bytes_max;
  rqo.send_queue_bytes_max = flags.rqp_send_queue_bytes_max;
  rqo.hello_timeout_ms = flags.rqp_hello_timeout_ms;
  ringq::rqp::RqpServer rqp_server(engine, rqo, ring_ptrs);
  if (std::string rqp_why; !rqp_server.Start(&rqp_why)) {
    ringq::LogLine("cannot serve RQP on %s:%u: %s", flags.host.c_str(), flags.rqp_port,
                   rqp_why.c_str());
    return 1;
  }
  registry.Add(&rqp_server);
  engine.Start();
  if (flags.rqp) {
    ringq::LogLine("RQP listening on %s:%u (%s, %u shards)", flags.host.c_str(), rqp_server.port(),
                   rqp_server.backend(), flags.shards);
  }

  ringq::grpcsvc::GrpcOptions go;
  go.host = flags.host;
  go.port = flags.grpc_port;
  go.message_bytes_max = flags.grpc_message_bytes_max;
  go.streams_max = flags.grpc_streams_max;
  ringq::grpcsvc::GrpcProbe grpc_probe;
  if (flags.metrics) go.probe = &grpc_probe;
  if (flags.rqp) {
    grpc_probe.SetRqpSource([&rqp_server] {
      auto& n = rqp_server.counters();
      ringq::grpcsvc::GrpcProbe::ProtocolFigures f;
      f.bytes_in = n.bytes_in.load(std::memory_order_relaxed);
      f.bytes_out = n.bytes_out.load(std::memory_order_relaxed);
      f.connections = n.open.load(std::memory_order_relaxed);
      f.credits = rqp_server.SubscribeCredits();
      return f;
    });
  }
  ringq::grpcsvc::GrpcServer grpc_server(engine, go);
  // Declared after everything the collectors read: destroyed first, so no
  // scrape runs while they are torn down, on any return path.
  struct StopHttp {
    ringq::http::HttpServer& http;
    ~StopHttp() { http.Stop(); }
  } stop_http{http_server};
  registry.Add(&engine_metrics);
  if (flags.metrics) registry.Add(&grpc_probe);
  if (!grpc_server.Start()) {
    engine.Stop();
    return 1;
  }
  ringq::LogLine("gRPC listening on %s:%u", flags.host.c_str(), grpc_server.port());
  grpc_server.SetServing(true);
  http_server.SetReady(true);
  ringq::LogLine("ready");

  int sig = 0;
  sigwait(&sigs, &sig);
  ringq::LogLine("%s received: draining (grace %u ms)", strsignal(sig), flags.shutdown_grace_ms);
  http_server.SetReady(false);
  rqp_server.Drain();
  grpc_server.Shutdown(flags.shutdown_grace_ms);
  engine.Stop();
  ringq::LogLine("stopped");
  close(lock_fd);
  return 0;
}
