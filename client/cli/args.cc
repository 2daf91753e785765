#include <charconv>
#include <cstdlib>
#include <set>

#include "client/cli/cli.h"

namespace ringq::cli {

namespace {

// Every option the tool knows, and whether it takes a value.
struct OptionSpec {
  std::string_view name;
  bool takes_value;
};
constexpr OptionSpec kOptions[] = {
    // global
    {"server", true},
    {"token", true},
    {"json", false},
    {"timeout-ms", true},
    {"help", false},
    // commands
    {"priority", true},
    {"delay-ms", true},
    {"max-attempts", true},
    {"dedup-key", true},
    {"batch", true},
    {"reason", true},
    {"limit", true},
    {"after", true},
    {"credits", true},
    {"count", true},
    {"fail", false},
    {"no-retry", false},
};

const OptionSpec* FindOption(std::string_view name) {
  for (const auto& o : kOptions) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

bool ApplyGlobal(const std::string& name, const std::string& value, Args* args,
                 std::string* error) {
  if (name == "server") {
    args->server = value;
  } else if (name == "token") {
    args->token = value;
  } else if (name == "json") {
    args->json = true;
  } else if (name == "help") {
    args->help = true;
  } else if (name == "timeout-ms") {
    uint64_t ms = 0;
    if (!ParseUint64(value, &ms) || ms == 0 || ms > 3'600'000) {
      *error = "--timeout-ms must be 1..3600000, not \"" + value + "\"";
      return false;
    }
    args->timeout_ms = static_cast<uint32_t>(ms);
  } else {
    args->options[name] = value;
  }
  return true;
}

}  // namespace

bool ParseUint64(std::string_view s, uint64_t* out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

bool ParseArgs(int argc, char** argv, Args* args, std::string* error) {
  if (const char* env = std::getenv("RINGQ_SERVER"); env != nullptr && *env != '\0') {
    args->server = env;
  } else {
    args->server = "grpc://127.0.0.1:7420";
  }
  if (const char* env = std::getenv("RINGQ_TOKEN"); env != nullptr) args->token = env;
  bool options_ended = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (options_ended || arg.size() < 2 || arg[0] != '-' || (arg[1] != '-' && arg != "-h")) {
      args->words.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    if (arg == "-h") {
      args->help = true;
      continue;
    }
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const OptionSpec* spec = FindOption(name);
    if (spec == nullptr) {
      *error = "unknown option --" + name;
      return false;
    }
    std::string value;
    if (eq != std::string::npos) {
      if (!spec->takes_value) {
        *error = "--" + name + " takes no value";
        return false;
      }
      value = arg.substr(eq + 1);
    } else if (spec->takes_value) {
      if (i + 1 >= argc) {
        *error = "--" + name + " needs a value";
        return false;
      }
      value = argv[++i];
    }
    if (!ApplyGlobal(name, value, args, error)) return false;
  }
  return true;
}

bool IntOption(const Args& args, const std::string& name, int64_t min, int64_t max,
               int64_t fallback, int64_t* out, std::string* error) {
  auto it = args.options.find(name);
  if (it == args.options.end()) {
    *out = fallback;
    return true;
  }
  const std::string& v = it->second;
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < min || n > max) {
    *error = "--" + name + " must be an integer in " + std::to_string(min) + ".." +
             std::to_string(max) + ", not \"" + v + "\"";
    return false;
  }
  *out = n;
  return true;
}

bool OnlyOptions(const Args& args, std::initializer_list<std::string_view> allowed,
                 std::string* error) {
  for (const auto& [name, value] : args.options) {
    bool ok = false;
    for (auto a : allowed) ok |= a == name;
    if (!ok) {
      *error = args.words[0] + " does not take --" + name;
      return false;
    }
  }
  return true;
}

const char* UsageText() {
  return R"(ringq: command-line client of the ringq job-queue server

usage: ringq [--server URL] [--json] [--token T] [--timeout-ms N] COMMAND [ARGS]

commands:
  push QUEUE [PAYLOAD...]     push one job per PAYLOAD; with no PAYLOAD (or "-"),
                              one job per line of stdin (empty lines skipped)
      --priority N            higher runs first (-1000000..1000000; default 0)
      --delay-ms N            run no earlier than N ms from now
      --max-attempts N        deliveries before the job is dead-lettered (0 = server default)
      --dedup-key K           idempotency key: a live job with K is not pushed twice
      --batch N               push N jobs per PushBatch call (default 1: one Push
                              per job). Jobs keep their order: over rqp:// calls
                              are pipelined, over grpc:// each waits for the last
  stats [QUEUE]               counts by state, per queue (and totals without QUEUE)
  queues                      every queue with its counts
  get ID                      one job
  cancel ID [--reason R]      cancel a waiting, delayed or active job
  pause QUEUE                 stop delivering the queue's jobs (pushes still accepted)
  resume QUEUE                deliver again
  dead list QUEUE [--limit N] [--after ID]
                              dead-lettered jobs (N per page, 1..1000; default 100)
  dead retry QUEUE [ID...]    move dead jobs (all, or these) back to waiting
  dead purge QUEUE [ID...]    forget dead jobs (all, or these)
  tail QUEUE... [--credits N] [--count N] [--fail [--no-retry]]
                              a worker: print each job (id, queue, attempt, payload)
                              and ack it (--fail: fail it); stop after N jobs
                              (--count) or on Ctrl-C, closing the stream cleanly

options:
  --server URL      grpc://HOST:PORT (default port 7420) or rqp://HOST:PORT (7422);
                    default $RINGQ_SERVER, else grpc://127.0.0.1:7420
  --json            one JSON object per line (for scripts); default: text for people
  --token T         auth token (default $RINGQ_TOKEN)
  --timeout-ms N    connect timeout and deadline of each call (default 10000)
  --help            this text

exit codes:
  0  ok
  1  the server refused the request (its status code and message go to stderr)
  2  usage error
  3  cannot connect, or the server is unavailable
  4  not found (e.g. get of a job that does not exist)
)";
}

}  // namespace ringq::cli
