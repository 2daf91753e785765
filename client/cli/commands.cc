// The commands of the ringq CLI. Each validates its arguments first (usage
// errors exit 2 without touching the network), then connects and runs.
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <functional>
#include <iostream>
#include <mutex>
#include <thread>

#include "client/cli/cli.h"

namespace ringq::cli {

namespace {

using client::Client;
using client::Status;

int Usage(const std::string& message) {
  std::fprintf(stderr, "ringq: %s\n(ringq --help lists commands and options)\n", message.c_str());
  return kExitUsage;
}

// Connects as the global options say; an exit code other than 0 on failure.
int Connect(const Args& args, std::unique_ptr<Client>* client) {
  client::Options o;
  Status st = client::ParseServerUrl(args.server, &o);
  if (!st.ok()) return Usage(st.message);
  o.token = args.token;
  o.connect_timeout_ms = args.timeout_ms;
  o.call_timeout_ms = args.timeout_ms;
  st = Client::Connect(o, client);
  return st.ok() ? kExitOk : ReportError(st);
}

bool ParseId(const std::string& s, uint64_t* id) { return ParseUint64(s, id) && *id != 0; }

// Positional words after the command (and subcommand): exactly [min, max].
bool Positionals(const Args& args, size_t skip, size_t min, size_t max, std::string* error) {
  const size_t n = args.words.size() - skip;
  if (n < min || n > max) {
    *error = "wrong number of arguments for " + args.words[0];
    return false;
  }
  return true;
}

// ---------------------------------------------------------------- push

// Answers of pipelined pushes, printed in input order; errors go to stderr
// as they come, and the first one decides the exit code.
class PushPrinter {
 public:
  PushPrinter(bool json, std::string queue) : json_(json), queue_(std::move(queue)) {}

  void Issued(size_t n) {
    std::lock_guard lock(mu_);
    issued_ += n;
  }
  // Job `index` (0-based, input order) was answered.
  void Answered(size_t index, const Status& st, uint64_t id, bool duplicate) {
    std::lock_guard lock(mu_);
    if (!st.ok()) {
      const int code = ReportError(st, "job " + std::to_string(index + 1));
      if (exit_code_ == kExitOk) exit_code_ = code;
      ready_.emplace(index, std::string());
    } else if (json_) {
      ready_.emplace(
          index,
          JsonLine().Num("id", id).Str("queue", queue_).Bool("duplicate", duplicate).Finish());
    } else {
      ready_.emplace(index, std::to_string(id) + (duplicate ? " (duplicate)" : ""));
    }
    for (auto it = ready_.begin(); it != ready_.end() && it->first == next_;
         it = ready_.erase(it)) {
      if (!it->second.empty()) PrintLine(it->second);
      ++next_;
    }
    ++answered_;
    cv_.notify_all();
  }
  int Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return answered_ == issued_; });
    return exit_code_;
  }

 private:
  const bool json_;
  const std::string queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t issued_ = 0, answered_ = 0, next_ = 0;
  std::map<size_t, std::string> ready_;
  int exit_code_ = kExitOk;
};

// Pushes `specs` (jobs first_index...) as one Push each, or one PushBatch.
void Submit(Client& c, std::vector<v1::JobSpec> specs, size_t first_index, bool batch,
            PushPrinter* printer) {
  printer->Issued(specs.size());
  if (!batch) {
    for (size_t i = 0; i < specs.size(); ++i) {
      v1::PushRequest req;
      *req.mutable_job() = std::move(specs[i]);
      c.Push(std::move(req), [printer, index = first_index + i](Status st, v1::PushResponse r) {
        printer->Answered(index, st, r.id(), r.duplicate());
      });
    }
    return;
  }
  v1::PushBatchRequest req;
  const size_t n = specs.size();
  for (auto& s : specs) *req.add_jobs() = std::move(s);
  c.PushBatch(std::move(req), [printer, first_index, n](Status st, v1::PushBatchResponse r) {
    for (size_t i = 0; i < n; ++i) {
      if (!st.ok()) {
        printer->Answered(first_index + i, st, 0, false);
      } else if (i >= static_cast<size_t>(r.results_size())) {
        printer->Answered(first_index + i,
                          Status(client::StatusCode::kInternal, "no result for this job"), 0,
                          false);
      } else if (const auto& res = r.results(static_cast<int>(i)); res.has_error()) {
        printer->Answered(
            first_index + i,
            Status(client::StatusCodeFromWire(res.error().code()), res.error().message()), 0,
            false);
      } else {
        printer->Answered(first_index + i, Status(), res.id(), res.duplicate());
      }
    }
  });
}

int PushCommand(const Args& args) {
  std::string error;
  int64_t priority, delay_ms, max_attempts, batch;
  if (!OnlyOptions(args, {"priority", "delay-ms", "max-attempts", "dedup-key", "batch"}, &error) ||
      !Positionals(args, 1, 1, SIZE_MAX, &error) ||
      !IntOption(args, "priority", -1'000'000, 1'000'000, 0, &priority, &error) ||
      !IntOption(args, "delay-ms", 0, 31'536'000'000, 0, &delay_ms, &error) ||
      !IntOption(args, "max-attempts", 0, 1000, 0, &max_attempts, &error) ||
      !IntOption(args, "batch", 1, 10'000, 1, &batch, &error)) {
    return Usage(error);
  }
  v1::JobSpec spec;
  spec.set_queue(args.words[1]);
  spec.set_priority(static_cast<int32_t>(priority));
  spec.set_delay_ms(static_cast<uint64_t>(delay_ms));
  spec.set_max_attempts(static_cast<uint32_t>(max_attempts));
  if (auto it = args.options.find("dedup-key"); it != args.options.end()) {
    spec.set_unique_key(it->second);
  }
  const bool from_stdin =
      args.words.size() == 2 || (args.words.size() == 3 && args.words[2] == "-");
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;

  PushPrinter printer(args.json, args.words[1]);
  const bool use_batch = batch > 1;
  // Jobs keep their input order. RQP applies pipelined requests of one
  // connection to one queue in order; separate gRPC calls may be reordered,
  // so over gRPC each Push (or PushBatch) waits for the previous one.
  const bool pipeline = c->options().protocol == client::Protocol::kRqp;
  std::vector<v1::JobSpec> pending;
  size_t index = 0;
  const auto add = [&](std::string payload) {
    pending.push_back(spec);
    pending.back().set_payload(std::move(payload));
    if (pending.size() >= static_cast<size_t>(batch)) {
      Submit(*c, std::move(pending), index, use_batch, &printer);
      index += static_cast<size_t>(batch);
      pending.clear();
      if (!pipeline) printer.Wait();
    }
  };
  if (from_stdin) {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) add(std::move(line));
    }
  } else {
    for (size_t i = 2; i < args.words.size(); ++i) add(args.words[i]);
  }
  if (!pending.empty()) Submit(*c, std::move(pending), index, use_batch, &printer);
  return printer.Wait();
}

// ---------------------------------------------------------------- stats, queues

constexpr const char* kStatsHeaderFormat = "%-24s %9s %9s %9s %9s %9s %9s %9s %11s %5s %s";
constexpr const char* kStatsRowFormat =
    "%-24s %9llu %9llu %9llu %9llu %9llu %9llu %9llu %11llu %5llu %s";

std::string StatsRowText(const v1::QueueStats& s, std::string_view name) {
  using ull = unsigned long long;
  char buf[512];
  std::snprintf(buf, sizeof buf, kStatsRowFormat, std::string(name).c_str(), ull{s.waiting()},
                ull{s.delayed()}, ull{s.active()}, ull{s.completed()}, ull{s.dead()},
                ull{s.cancelled()}, ull{s.expired()}, ull{s.pushed_total()}, ull{s.subscribers()},
                s.paused() ? "paused" : "");
  std::string row = buf;
  while (!row.empty() && row.back() == ' ') row.pop_back();
  return row;
}

void PrintStatsTable(const Args& args, const google::protobuf::RepeatedPtrField<v1::QueueStats>& qs,
                     const v1::QueueStats* totals) {
  if (!args.json) {
    char buf[512];
    std::snprintf(buf, sizeof buf, kStatsHeaderFormat, "QUEUE", "WAITING", "DELAYED", "ACTIVE",
                  "COMPLETED", "DEAD", "CANCELLED", "EXPIRED", "PUSHED", "SUBS", "");
    std::string header = buf;
    while (!header.empty() && header.back() == ' ') header.pop_back();
    PrintLine(header);
  }
  for (const auto& q : qs) {
    PrintLine(args.json ? QueueStatsJson(q, q.queue()) : StatsRowText(q, Printable(q.queue())));
  }
  if (totals != nullptr) {
    PrintLine(args.json ? QueueStatsJson(*totals, "*") : StatsRowText(*totals, "*"));
  }
}

int StatsCommand(const Args& args) {
  std::string error;
  if (!OnlyOptions(args, {}, &error) || !Positionals(args, 1, 0, 1, &error)) return Usage(error);
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;
  v1::StatsRequest req;
  if (args.words.size() == 2) req.set_queue(args.words[1]);
  v1::StatsResponse resp;
  if (Status st = c->Stats(req, &resp); !st.ok()) return ReportError(st);
  PrintStatsTable(args, resp.queues(), req.queue().empty() ? &resp.totals() : nullptr);
  return kExitOk;
}

int QueuesCommand(const Args& args) {
  std::string error;
  if (!OnlyOptions(args, {}, &error) || !Positionals(args, 1, 0, 0, &error)) return Usage(error);
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;
  v1::ListQueuesResponse resp;
  if (Status st = c->ListQueues(v1::ListQueuesRequest(), &resp); !st.ok()) return ReportError(st);
  PrintStatsTable(args, resp.queues(), nullptr);
  return kExitOk;
}

// ---------------------------------------------------------------- jobs

int GetCommand(const Args& args) {
  std::string error;
  uint64_t id = 0;
  if (!OnlyOptions(args, {}, &error) || !Positionals(args, 1, 1, 1, &error)) return Usage(error);
  if (!ParseId(args.words[1], &id)) return Usage("job id must be a positive integer");
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;
  v1::GetJobRequest req;
  req.set_id(id);
  v1::Job job;
  if (Status st = c->GetJob(req, &job); !st.ok()) return ReportError(st);
  PrintLine(args.json ? JobJson(job) : JobText(job));
  return kExitOk;
}

int CancelCommand(const Args& args) {
  std::string error;
  uint64_t id = 0;
  if (!OnlyOptions(args, {"reason"}, &error) || !Positionals(args, 1, 1, 1, &error)) {
    return Usage(error);
  }
  if (!ParseId(args.words[1], &id)) return Usage("job id must be a positive integer");
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;
  v1::CancelRequest req;
  req.set_id(id);
  if (auto it = args.options.find("reason"); it != args.options.end()) req.set_reason(it->second);
  v1::CancelResponse resp;
  if (Status st = c->Cancel(req, &resp); !st.ok()) return ReportError(st);
  const std::string was = StateName(resp.previous_state());
  PrintLine(
      args.json
          ? JsonLine().Num("id", id).Bool("cancelled", true).Str("previous_state", was).Finish()
          : "cancelled " + std::to_string(id) + " (was " + was + ")");
  return kExitOk;
}

int PauseResumeCommand(const Args& args) {
  std::string error;
  if (!OnlyOptions(args, {}, &error) || !Positionals(args, 1, 1, 1, &error)) return Usage(error);
  const bool pause = args.words[0] == "pause";
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;
  v1::QueueRequest req;
  req.set_queue(args.words[1]);
  Status st;
  if (pause) {
    v1::PauseResponse resp;
    st = c->Pause(req, &resp);
  } else {
    v1::ResumeResponse resp;
    st = c->Resume(req, &resp);
  }
  if (!st.ok()) return ReportError(st);
  PrintLine(args.json ? JsonLine().Str("queue", req.queue()).Bool("paused", pause).Finish()
                      : std::string(pause ? "paused " : "resumed ") + Printable(req.queue()));
  return kExitOk;
}

// ---------------------------------------------------------------- dead letters

int DeadListCommand(const Args& args, Client& c) {
  std::string error;
  int64_t limit, after;
  if (!IntOption(args, "limit", 1, 1000, 100, &limit, &error) ||
      !IntOption(args, "after", 0, INT64_MAX, 0, &after, &error)) {
    return Usage(error);
  }
  v1::ListDeadRequest req;
  req.set_queue(args.words[2]);
  req.set_limit(static_cast<uint32_t>(limit));
  req.set_after_id(static_cast<uint64_t>(after));
  v1::ListDeadResponse resp;
  if (Status st = c.ListDead(req, &resp); !st.ok()) return ReportError(st);
  for (const auto& j : resp.jobs()) {
    PrintLine(args.json ? JobJson(j)
                        : std::to_string(j.id()) + "  attempts=" + std::to_string(j.attempts()) +
                              "/" + std::to_string(j.max_attempts()) + "  error=" +
                              Printable(j.last_error()) + "  payload=" + Printable(j.payload()));
  }
  if (resp.next_after_id() != 0 && !args.json) {
    std::fprintf(stderr, "ringq: more dead jobs: --after %llu\n",
                 static_cast<unsigned long long>(resp.next_after_id()));
  }
  return kExitOk;
}

int DeadSelectCommand(const Args& args, Client& c, const std::vector<uint64_t>& ids) {
  v1::DeadSelector sel;
  sel.set_queue(args.words[2]);
  for (uint64_t id : ids) sel.add_ids(id);
  const bool retry = args.words[1] == "retry";
  uint64_t count = 0;
  Status st;
  if (retry) {
    v1::RetryDeadResponse resp;
    st = c.RetryDead(sel, &resp);
    count = resp.count();
  } else {
    v1::PurgeDeadResponse resp;
    st = c.PurgeDead(sel, &resp);
    count = resp.count();
  }
  if (!st.ok()) return ReportError(st);
  const char* verb = retry ? "retried" : "purged";
  PrintLine(args.json ? JsonLine().Str("queue", sel.queue()).Num(verb, count).Finish()
                      : std::string(verb) + " " + std::to_string(count));
  return kExitOk;
}

int DeadCommand(const Args& args) {
  std::string error;
  if (args.words.size() < 3) return Usage("usage: ringq dead list|retry|purge QUEUE ...");
  const std::string& sub = args.words[1];
  std::vector<uint64_t> ids;
  if (sub == "list") {
    if (!OnlyOptions(args, {"limit", "after"}, &error) || !Positionals(args, 2, 1, 1, &error)) {
      return Usage(error);
    }
  } else if (sub == "retry" || sub == "purge") {
    if (!OnlyOptions(args, {}, &error)) return Usage(error);
    for (size_t i = 3; i < args.words.size(); ++i) {
      uint64_t id;
      if (!ParseId(args.words[i], &id)) return Usage("job id must be a positive integer");
      ids.push_back(id);
    }
  } else {
    return Usage("unknown dead subcommand \"" + sub + "\" (list, retry, purge)");
  }
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;
  return sub == "list" ? DeadListCommand(args, *c) : DeadSelectCommand(args, *c, ids);
}

// ---------------------------------------------------------------- tail

std::atomic<int> g_signals{0};
extern "C" void OnSignal(int) { g_signals.fetch_add(1); }

struct TailState {
  std::mutex mu;
  uint64_t handled = 0;
  int exit_code = kExitOk;
};

void HandleDeliveries(const Args& args, bool fail, bool no_retry, uint64_t count,
                      std::atomic<client::Subscription*>* self, TailState* state,
                      std::vector<v1::Delivery> ds) {
  while (self->load() == nullptr) std::this_thread::yield();  // set right after Subscribe
  client::Subscription* sub = self->load();
  for (const auto& d : ds) {
    {
      std::lock_guard lock(state->mu);
      // Past --count: not printed, not settled; Close releases it.
      if (count != 0 && state->handled >= count) continue;
      ++state->handled;
    }
    const v1::Job& j = d.job();
    // Settle first: after Close (Ctrl-C) nothing is sent, and a job that
    // cannot be settled goes back to its queue unprinted.
    const bool settled = fail ? sub->Fail(j.id(), d.lease_token(), "ringq tail --fail", no_retry)
                              : sub->Ack(j.id(), d.lease_token());
    if (!settled) {
      std::lock_guard lock(state->mu);
      --state->handled;
      continue;
    }
    PrintLine(args.json
                  ? JsonLine()
                        .Num("id", j.id())
                        .Str("queue", j.queue())
                        .Num("attempt", j.attempts())
                        .Num("max_attempts", j.max_attempts())
                        .Bytes("payload", j.payload())
                        .Finish()
                  : "id=" + std::to_string(j.id()) + " queue=" + j.queue() +
                        " attempt=" + std::to_string(j.attempts()) + "/" +
                        std::to_string(j.max_attempts()) + " payload=" + Printable(j.payload()));
  }
  std::lock_guard lock(state->mu);
  if (count != 0 && state->handled >= count) sub->Close();
}

int TailCommand(const Args& args) {
  std::string error;
  int64_t credits, count;
  if (!OnlyOptions(args, {"credits", "count", "fail", "no-retry"}, &error) ||
      !Positionals(args, 1, 1, 16, &error) ||
      !IntOption(args, "credits", 1, 10'000, 16, &credits, &error) ||
      !IntOption(args, "count", 0, INT64_MAX, 0, &count, &error)) {
    return Usage(error);
  }
  const bool fail = args.options.count("fail") > 0;
  const bool no_retry = args.options.count("no-retry") > 0;
  if (no_retry && !fail) return Usage("--no-retry goes with --fail");
  std::unique_ptr<Client> c;
  if (int rc = Connect(args, &c); rc != kExitOk) return rc;

  TailState state;
  std::atomic<client::Subscription*> self{nullptr};
  client::SubscriptionHandlers h;
  h.on_deliveries = [&](std::vector<v1::Delivery> ds) {
    HandleDeliveries(args, fail, no_retry, static_cast<uint64_t>(count), &self, &state,
                     std::move(ds));
  };
  h.on_results = [&](std::vector<v1::SettleResult> rs) {
    for (const auto& r : rs) {
      if (!r.has_error()) continue;
      const int code =
          ReportError(Status(client::StatusCodeFromWire(r.error().code()), r.error().message()),
                      "settling job " + std::to_string(r.id()));
      std::lock_guard lock(state.mu);
      if (state.exit_code == kExitOk) state.exit_code = code;
    }
  };
  v1::SubscribeOpen open;
  for (size_t i = 1; i < args.words.size(); ++i) open.add_queues(args.words[i]);
  // No more credits than jobs wanted: fewer deliveries past --count.
  open.set_credits(static_cast<uint32_t>(count > 0 ? std::min(credits, count) : credits));
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  auto sub = c->Subscribe(open, h);
  self.store(sub.get());
  Status end;
  int signals_seen = 0;
  // Ctrl-C closes cleanly (the server answers the settles it got and
  // releases the rest); a second one cancels.
  while (!sub->WaitEnd(100, &end)) {
    const int n = g_signals.load();
    if (n > signals_seen) {
      signals_seen = n;
      if (n == 1) sub->Close();
      if (n >= 2) sub->Cancel();
    }
  }
  if (!end.ok() && !(signals_seen >= 2 && end.code == client::StatusCode::kCancelled)) {
    return ReportError(end, "subscription");
  }
  std::lock_guard lock(state.mu);
  return state.exit_code;
}

}  // namespace

int RunCommand(const Args& args) {
  static const std::map<std::string, std::function<int(const Args&)>> kCommands = {
      {"push", PushCommand},          {"stats", StatsCommand},
      {"queues", QueuesCommand},      {"get", GetCommand},
      {"cancel", CancelCommand},      {"pause", PauseResumeCommand},
      {"resume", PauseResumeCommand}, {"dead", DeadCommand},
      {"tail", TailCommand},
  };
  auto it = kCommands.find(args.words[0]);
  if (it == kCommands.end()) return Usage("unknown command \"" + args.words[0] + "\"");
  return it->second(args);
}

}  // namespace ringq::cli
