// ringqd: parses flags, starts the engine and the gRPC server, waits for
// SIGINT/SIGTERM, then drains: the gRPC server stops taking calls and gives
// those in flight a grace period, then the shards answer what they accepted.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "service/engine/engine.h"
#include "service/flags.h"
#include "service/grpc/server.h"
#include "service/log.h"

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
  ringq::LogLine("durability: none (in-memory journal; the write-ahead log is not built yet)");

  ringq::engine::SystemClock clock;
  ringq::engine::EngineOptions eo;
  eo.shards = flags.shards;
  eo.inbox_max = flags.inbox_max;
  eo.limits = flags.limits;
  ringq::engine::Engine engine(eo, clock);
  engine.Start();

  ringq::grpcsvc::GrpcOptions go;
  go.host = flags.host;
  go.port = flags.grpc_port;
  go.message_bytes_max = flags.grpc_message_bytes_max;
  go.streams_max = flags.grpc_streams_max;
  ringq::grpcsvc::GrpcServer grpc_server(engine, go);
  if (!grpc_server.Start()) {
    engine.Stop();
    return 1;
  }
  ringq::LogLine("gRPC listening on %s:%u", flags.host.c_str(), grpc_server.port());
  grpc_server.SetServing(true);
  ringq::LogLine("ready");

  int sig = 0;
  sigwait(&sigs, &sig);
  ringq::LogLine("%s received: draining (grace %u ms)", strsignal(sig), flags.shutdown_grace_ms);
  grpc_server.Shutdown(flags.shutdown_grace_ms);
  engine.Stop();
  ringq::LogLine("stopped");
  close(lock_fd);
  return 0;
}
