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
  std::string data_dir = "./data";
  uint32_t shards = 0;  // 0 = number of cores
  uint32_t inbox_max = 65'536;
  uint32_t grpc_message_bytes_max = 64u << 20;
  uint32_t grpc_streams_max = 1'000;
  uint32_t shutdown_grace_ms = 5'000;
  engine::Limits limits;
};

// Parses argv. On --help prints the table and exits 0; on a bad flag prints
// what is wrong and exits 2.
ServerFlags ParseFlags(int argc, char** argv);

}  // namespace ringq
