// The ringq command-line tool (README.md in this folder): argument parsing,
// output formatting and the commands. Internal to client/cli.
//
// Exit codes (also in `ringq --help`): kExitOk 0, kExitServerError 1 (the
// status code name and message go to stderr), kExitUsage 2, kExitUnavailable
// 3 (cannot connect, connection lost, server unavailable), kExitNotFound 4.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/cpp/client.h"

namespace ringq::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnavailable = 3;
inline constexpr int kExitNotFound = 4;

// ---- args.cc

// The command line split into global settings, the command's words and its
// options. Options may appear anywhere; "--" ends them.
struct Args {
  std::string server;  // --server, else $RINGQ_SERVER, else grpc://127.0.0.1:7420
  std::string token;   // --token, else $RINGQ_TOKEN
  bool json = false;
  bool help = false;
  uint32_t timeout_ms = 10'000;
  std::vector<std::string> words;              // command, subcommand, positionals
  std::map<std::string, std::string> options;  // command options: name (no dashes) -> value
};

// Fills *args; false with *error (a usage error) otherwise.
bool ParseArgs(int argc, char** argv, Args* args, std::string* error);
// The option's value parsed as an integer in [min, max]; `fallback` when the
// option is absent. False with *error when malformed or out of range.
bool IntOption(const Args& args, const std::string& name, int64_t min, int64_t max,
               int64_t fallback, int64_t* out, std::string* error);
bool ParseUint64(std::string_view s, uint64_t* out);
// Usage error unless every option given is in `allowed`.
bool OnlyOptions(const Args& args, std::initializer_list<std::string_view> allowed,
                 std::string* error);
const char* UsageText();

// ---- output.cc

// One JSON object on one line. Strings are escaped (RFC 8259); byte fields
// that are not valid UTF-8 are written as "<key>_base64".
class JsonLine {
 public:
  JsonLine& Str(std::string_view key, std::string_view value);
  JsonLine& Bytes(std::string_view key, std::string_view value);
  JsonLine& Num(std::string_view key, uint64_t value);
  JsonLine& Int(std::string_view key, int64_t value);
  JsonLine& Bool(std::string_view key, bool value);
  JsonLine& Raw(std::string_view key, std::string_view json);  // an already-encoded value
  std::string Finish() const { return out_ + "}"; }

 private:
  void Key(std::string_view key);
  std::string out_ = "{";
};

std::string JsonString(std::string_view s);
bool IsValidUtf8(std::string_view s);
std::string Base64(std::string_view s);
// Bytes for a terminal: printable UTF-8 as is, the rest as \n, \t, \xNN.
std::string Printable(std::string_view s);
// "waiting", "dead", ... (JobState without its prefix, lower case).
std::string StateName(int state);
// Epoch milliseconds as "2026-11-26T16:47:32.947Z"; "-" for 0.
std::string IsoTime(uint64_t epoch_ms);

std::string JobJson(const v1::Job& job);
std::string JobText(const v1::Job& job);  // "key  value" lines
std::string QueueStatsJson(const v1::QueueStats& s, std::string_view name);
// Prints one line to stdout and flushes (thread-safe).
void PrintLine(const std::string& line);
// "ringq: NOT_FOUND: job 42 does not exist" to stderr; returns the exit code.
int ReportError(const client::Status& status, std::string_view context = {});
int ExitCodeFor(const client::Status& status);

// ---- commands.cc

// Runs the command in args.words[0]; returns the exit code.
int RunCommand(const Args& args);

}  // namespace ringq::cli
