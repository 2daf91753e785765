#include "client/cpp/options.h"

#include <charconv>

namespace ringq::client {

namespace {

Status Invalid(std::string_view url, const std::string& why) {
  return Status(StatusCode::kInvalidArgument,
                "bad server URL \"" + std::string(url) + "\": " + why +
                    " (expected grpc://HOST:PORT, rqp://HOST:PORT or HOST:PORT)");
}

}  // namespace

Status ParseServerUrl(std::string_view url, Options* options) {
  Protocol protocol = Protocol::kGrpc;
  std::string_view rest = url;
  if (const size_t scheme_end = url.find("://"); scheme_end != std::string_view::npos) {
    const std::string_view scheme = url.substr(0, scheme_end);
    if (scheme == "grpc") {
      protocol = Protocol::kGrpc;
    } else if (scheme == "rqp") {
      protocol = Protocol::kRqp;
    } else {
      return Invalid(url, "unknown scheme \"" + std::string(scheme) + "\"");
    }
    rest = url.substr(scheme_end + 3);
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty()) return Invalid(url, "no host");
  if (rest.find('/') != std::string_view::npos) return Invalid(url, "a path is not allowed");

  // Split host and port; an IPv6 literal is bracketed: [::1]:7420.
  std::string_view host = rest;
  std::string_view port;
  if (rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos) return Invalid(url, "unclosed '['");
    host = rest.substr(0, close + 1);
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Invalid(url, "expected ':' after ']'");
      port = after.substr(1);
    }
  } else if (const size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Invalid(url, "an IPv6 address must be bracketed");
    }
  }
  if (host.empty() || host == "[]") return Invalid(url, "no host");
  uint32_t port_number = protocol == Protocol::kGrpc ? kGrpcPortDefault : kRqpPortDefault;
  if (!port.empty()) {
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
    if (ec != std::errc() || end != port.data() + port.size() || port_number == 0 ||
        port_number > 65535) {
      return Invalid(url, "port \"" + std::string(port) + "\" is not 1..65535");
    }
  }
  options->protocol = protocol;
  options->address = std::string(host) + ":" + std::to_string(port_number);
  return Status::Ok();
}

std::string ServerUrl(const Options& options) {
  return (options.protocol == Protocol::kGrpc ? "grpc://" : "rqp://") + options.address;
}

}  // namespace ringq::client
