// ringqd's command-line flags: one table, parsed by hand (no third-party
// flag library), every flag with its default and its help in one place.
#pragma once

#include <cstdint>
#include <string>

#include "service/engine/job.h"

namespace ringq {

struct ServerFlags {
  std::string host = "0.0.0.0";
  uint32_t grpc_port = 7420;
  uint32_t http_port = 7421;  // /metrics, /healthz, /readyz
  bool rqp = true;
  uint32_t rqp_port = 7422;  // RQP binary protocol
  uint32_t rqp_connections_max = 16'384;
  uint32_t rqp_inflight_max = 1'024;
  uint32_t rqp_frame_bytes_max = 4u << 20;
  uint64_t rqp_send_queue_bytes_max = 8u << 20;
  uint32_t rqp_hello_timeout_ms = 10'000;
  bool io_sqpoll = false;
  uint32_t metrics_queue_labels_max = 1'000;
  bool metrics = true;
  std::string data_dir = "./data";
  uint32_t shards = 0;  // 0 = number of cores
  uint32_t inbox_max = 65'536;
  uint32_t grpc_message_bytes_max = 64u << 20;
  uint32_t grpc_streams_max = 1'000;
  uint32_t shutdown_grace_ms = 5'000;
  std::string durability = "sync";  // sync | batch
  uint32_t sync_interval_ms = 10;
  uint64_t wal_segment_bytes = 64ull << 20;
  uint64_t wal_bytes_max = 16ull << 30;
  uint32_t checkpoint_interval_ms = 2'000;
  uint64_t disk_free_min_bytes = 128ull << 20;
  bool repair_wal = false;
  bool group_commit = true;
  bool wal_archive = false;
  engine::Limits limits;
};

// Parses argv. On --help prints the table and exits 0; on a bad flag prints
// what is wrong and exits 2.
ServerFlags ParseFlags(int argc, char** argv);

}  // namespace ringq
