// ringq: the command-line client of ringqd (README.md in this folder;
// `ringq --help`). Speaks gRPC or RQP through client/cpp.
#include <cstdio>
#include <cstdlib>

#include "client/cli/cli.h"

int main(int argc, char** argv) {
  using namespace ringq::cli;
  // gRPC's own log lines would mix with ours on stderr; errors are reported
  // as statuses. A user who sets GRPC_VERBOSITY keeps it.
  setenv("GRPC_VERBOSITY", "NONE", /*overwrite=*/0);
  Args args;
  std::string error;
  if (!ParseArgs(argc, argv, &args, &error)) {
    std::fprintf(stderr, "ringq: %s\n(ringq --help lists commands and options)\n", error.c_str());
    return kExitUsage;
  }
  if (args.help || (!args.words.empty() && args.words[0] == "help")) {
    std::fputs(UsageText(), stdout);
    return kExitOk;
  }
  if (args.words.empty()) {
    std::fputs(UsageText(), stderr);
    return kExitUsage;
  }
  return RunCommand(args);
}
