#include "service/flags.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string_view>
#include <thread>
#include <vector>

namespace ringq {

namespace {

struct Flag {
  const char* name;
  const char* help;
  std::function<std::string()> show;               // current (default) value
  std::function<bool(std::string_view)> set;       // false: bad value
  bool is_bool = false;                            // a bare --flag means true
};

template <typename T>
Flag Num(const char* name, T* v, T min, T max, const char* help) {
  return Flag{name, help, [v] { return std::to_string(*v); },
              [v, min, max](std::string_view s) {
                T x{};
                auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
                if (ec != std::errc() || p != s.data() + s.size() || x < min || x > max) {
                  return false;
                }
                *v = x;
                return true;
              }};
}

Flag Bool(const char* name, bool* v, const char* help) {
  return Flag{name, help, [v] { return std::string(*v ? "true" : "false"); },
              [v](std::string_view s) {
                if (s == "true" || s == "1") {
                  *v = true;
                } else if (s == "false" || s == "0") {
                  *v = false;
                } else {
                  return false;
                }
                return true;
              },
              true};
}

Flag OneOf(const char* name, std::string* v, std::vector<std::string> allowed, const char* help) {
  return Flag{name, help, [v] { return *v; },
              [v, allowed](std::string_view s) {
                for (const auto& a : allowed) {
                  if (s == a) {
                    *v = std::string(s);
                    return true;
                  }
                }
                return false;
              }};
}

Flag Str(const char* name, std::string* v, const char* help) {
  return Flag{name, help, [v] { return *v; },
              [v](std::string_view s) {
                if (s.empty()) return false;
                *v = std::string(s);
                return true;
              }};
}

std::vector<Flag> Table(ServerFlags& f) {
  auto& l = f.limits;
  return {
      Str("host", &f.host, "address the servers listen on"),
      Num<uint32_t>("grpc-port", &f.grpc_port, 0, 65535, "gRPC port; 0 picks a free one (logged)"),
      Num<uint32_t>("http-port", &f.http_port, 0, 65535,
                    "HTTP port of /metrics, /healthz, /readyz; 0 picks a free one (logged)"),
      Bool("rqp", &f.rqp, "serve RQP, the binary protocol (proto/PROTOCOL.md)"),
      Num<uint32_t>("rqp-port", &f.rqp_port, 0, 65535, "RQP port; 0 picks a free one (logged)"),
      Num<uint32_t>("rqp-connections-max", &f.rqp_connections_max, 1, 10'000'000,
                    "RQP connections open at once; past it a new one gets ERROR UNAVAILABLE"),
      Num<uint32_t>("rqp-inflight-max", &f.rqp_inflight_max, 16, 1'000'000,
                    "RQP requests in flight per connection (open streams count)"),
      Num<uint32_t>("rqp-frame-bytes-max", &f.rqp_frame_bytes_max, 64u << 10, 256u << 20,
                    "largest RQP frame, both directions"),
      Num<uint64_t>("rqp-send-queue-bytes-max", &f.rqp_send_queue_bytes_max, 64u << 10,
                    1ull << 32,
                    "unsent RQP output per connection past which it is not read until it drains"),
      Num<uint32_t>("rqp-hello-timeout-ms", &f.rqp_hello_timeout_ms, 100, 600'000,
                    "RQP connections that sent no HELLO by then are closed"),
      Bool("io-sqpoll", &f.io_sqpoll,
           "io_uring submission polling thread per shard (spins a core; measured off by "
           "default)"),
      Num<uint32_t>("metrics-queue-labels-max", &f.metrics_queue_labels_max, 0, 100'000,
                    "queues with their own metrics label; later ones share queue=\"_other\""),
      Bool("metrics", &f.metrics,
           "count events for /metrics: job counters, latency histograms, RPCs (false: "
           "gauges only; for measuring what counting costs)"),
      Str("data-dir", &f.data_dir, "directory of the server's data (created if missing)"),
      Num<uint32_t>("shards", &f.shards, 0, 256, "engine threads; 0 = number of cores"),
      Num<uint32_t>("inbox-max", &f.inbox_max, 16, 1u << 24,
                    "tasks queued per shard before RESOURCE_EXHAUSTED"),
      Num<uint32_t>("payload-bytes-max", &l.payload_bytes_max, 0, 64u << 20,
                    "largest job payload"),
      Num<uint32_t>("result-bytes-max", &l.result_bytes_max, 0, 64u << 20,
                    "largest ack result"),
      Num<uint32_t>("batch-max", &l.batch_max, 1, 1'000'000,
                    "items per PushBatch, Fetch, Subscribe message or dead-letter op"),
      Num<uint64_t>("queue-jobs-max", &l.queue_jobs_max, 1, 1ull << 40,
                    "live (waiting+delayed+active) jobs per queue"),
      Num<uint32_t>("queues-max", &l.queues_max, 1, 10'000'000, "queues per shard"),
      Num<uint32_t>("default-max-attempts", &l.default_max_attempts, 1,
                    engine::Limits::kMaxAttemptsMax, "max_attempts of a job that sets none"),
      Num<uint32_t>("default-lease-ms", &l.default_lease_ms, engine::Limits::kLeaseMsMin,
                    engine::Limits::kLeaseMsMax, "lease of a job that sets none"),
      Num<uint32_t>("default-backoff-base-ms", &l.default_backoff_base_ms, 1,
                    engine::Limits::kBackoffBaseMsMax, "retry backoff base"),
      Num<uint32_t>("default-backoff-cap-ms", &l.default_backoff_cap_ms, 1,
                    engine::Limits::kBackoffCapMsMax, "retry backoff cap"),
      Num<uint64_t>("completed-retention-count", &l.completed_retention_count, 0, 1ull << 32,
                    "finished (completed, cancelled, expired) jobs kept per queue"),
      Num<uint64_t>("completed-retention-ms", &l.completed_retention_ms, 0, 1ull << 40,
                    "how long finished jobs are kept"),
      Num<uint64_t>("dead-max", &l.dead_max, 1, 1ull << 32,
                    "dead jobs kept per queue; the oldest is forgotten past it"),
      Num<uint32_t>("fetch-wait-ms-max", &l.fetch_wait_ms_max, 0, 3'600'000,
                    "longest Fetch wait_ms"),
      Num<uint32_t>("fetch-waiters-max", &l.fetch_waiters_max, 1, 10'000'000,
                    "waiting Fetch calls per shard"),
      Num<uint32_t>("subscribe-credits-max", &l.subscribe_credits_max, 1, 1'000'000,
                    "credits (granted + outstanding) per Subscribe stream"),
      Num<uint32_t>("grpc-message-bytes-max", &f.grpc_message_bytes_max, 4096, 1u << 30,
                    "largest gRPC message received"),
      Num<uint32_t>("grpc-streams-max", &f.grpc_streams_max, 1, 1'000'000,
                    "concurrent streams per HTTP/2 connection"),
      Num<uint32_t>("shutdown-grace-ms", &f.shutdown_grace_ms, 0, 600'000,
                    "on SIGTERM, how long calls in flight may take to finish"),
      OneOf("durability", &f.durability, {"sync", "batch"},
            "sync: answer after fdatasync; batch: answer after write, fdatasync every "
            "--sync-interval-ms"),
      Num<uint32_t>("sync-interval-ms", &f.sync_interval_ms, 1, 10'000,
                    "batch durability: longest time between fdatasyncs"),
      Num<uint64_t>("wal-segment-bytes", &f.wal_segment_bytes, 1ull << 20, 1ull << 34,
                    "size of a preallocated WAL segment file"),
      Num<uint64_t>("wal-bytes-max", &f.wal_bytes_max, 2ull << 20, 1ull << 50,
                    "WAL bytes on disk per shard; past it pushes get RESOURCE_EXHAUSTED"),
      Num<uint32_t>("checkpoint-interval-ms", &f.checkpoint_interval_ms, 10, 600'000,
                    "how often the WAL is applied to RocksDB and old segments deleted"),
      Num<uint64_t>("disk-free-min-bytes", &f.disk_free_min_bytes, 0, 1ull << 50,
                    "free space kept on the data disk; below it pushes get RESOURCE_EXHAUSTED"),
      Bool("group-commit", &f.group_commit,
           "false: one fdatasync per WAL record (benchmarks only: shows what group commit buys)"),
      Bool("wal-archive", &f.wal_archive,
           "tests only: keep retired WAL segments in wal/shard-NNN/archive/ (unbounded disk use)"),
      Bool("repair-wal", &f.repair_wal,
           "start despite a corrupt WAL record: keep the bad bytes in a side file, drop what "
           "follows"),
  };
}

void Usage(std::vector<Flag>& table) {
  std::fprintf(stdout,
               "ringqd: the ringq job-queue server\n\nusage: ringqd [--flag=value ...]\n\n");
  for (const Flag& f : table) {
    std::fprintf(stdout, "  --%-28s %s (default: %s)\n", f.name, f.help, f.show().c_str());
  }
}

}  // namespace

ServerFlags ParseFlags(int argc, char** argv) {
  ServerFlags flags;
  auto table = Table(flags);
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage(table);
      std::exit(0);
    }
    if (!arg.starts_with("--")) {
      std::fprintf(stderr, "ringqd: unexpected argument '%s' (see --help)\n", argv[i]);
      std::exit(2);
    }
    arg.remove_prefix(2);
    std::string_view name = arg, value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = nullptr;
    for (Flag& f : table) {
      if (name == f.name) flag = &f;
    }
    if (flag == nullptr) {
      std::fprintf(stderr, "ringqd: unknown flag --%.*s (see --help)\n",
                   static_cast<int>(name.size()), name.data());
      std::exit(2);
    }
    if (!has_value && flag->is_bool) {
      value = "true";
      has_value = true;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ringqd: --%s needs a value\n", flag->name);
        std::exit(2);
      }
      value = argv[++i];
    }
    if (!flag->set(value)) {
      std::fprintf(stderr, "ringqd: bad value '%.*s' for --%s (%s)\n",
                   static_cast<int>(value.size()), value.data(), flag->name, flag->help);
      std::exit(2);
    }
  }
  if (flags.shards == 0) {
    flags.shards = std::max(1u, std::min(256u, std::thread::hardware_concurrency()));
  }
  if (flags.wal_bytes_max < 2 * flags.wal_segment_bytes) {
    std::fprintf(stderr, "ringqd: --wal-bytes-max must hold at least two --wal-segment-bytes\n");
    std::exit(2);
  }
  if (std::max(flags.limits.payload_bytes_max, flags.limits.result_bytes_max) + (1ull << 20) >
      flags.wal_segment_bytes) {
    std::fprintf(stderr,
                 "ringqd: --wal-segment-bytes must exceed --payload-bytes-max and "
                 "--result-bytes-max by 1 MiB (one record never spans segments)\n");
    std::exit(2);
  }
  if (flags.limits.payload_bytes_max + (256ull << 10) > flags.rqp_frame_bytes_max) {
    std::fprintf(stderr,
                 "ringqd: --rqp-frame-bytes-max must exceed --payload-bytes-max by 256 KiB "
                 "(a delivery always fits one frame)\n");
    std::exit(2);
  }
  if (flags.limits.default_backoff_cap_ms < flags.limits.default_backoff_base_ms) {
    std::fprintf(stderr, "ringqd: --default-backoff-cap-ms is below --default-backoff-base-ms\n");
    std::exit(2);
  }
  return flags;
}

}  // namespace ringq
