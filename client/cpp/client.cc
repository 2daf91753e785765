// Client: the request/response plumbing both transports share. Each public
// method is generated from methods.h: the async form owns its request and
// response in one heap object until `done` ran; the blocking form waits on
// a promise.
#include "client/cpp/client.h"

#include <cassert>
#include <future>

#include "client/cpp/subscription_core.h"
#include "client/cpp/transport.h"

namespace ringq::client {

using internal::Rpc;

namespace internal {

const char* RpcName(Rpc rpc) {
  switch (rpc) {
#define RINGQ_RPC_NAME(Name, Req, Resp, Kind) \
  case Rpc::k##Name:                          \
    return #Name;
    RINGQ_CLIENT_UNARY_METHODS(RINGQ_RPC_NAME)
#undef RINGQ_RPC_NAME
    case Rpc::kCount:
      break;
  }
  return "?";
}

}  // namespace internal

namespace {

// The call's deadline: a Fetch may wait wait_ms on the server before it
// answers, so it gets that on top.
uint32_t TimeoutFor(const Options& options, Rpc rpc, const google::protobuf::Message& request) {
  if (options.call_timeout_ms == 0) return 0;
  uint64_t ms = options.call_timeout_ms;
  if (rpc == Rpc::kFetch) ms += static_cast<const v1::FetchRequest&>(request).wait_ms();
  return static_cast<uint32_t>(std::min<uint64_t>(ms, UINT32_MAX));
}

}  // namespace

Status Client::Connect(const Options& options, std::unique_ptr<Client>* client) {
  std::unique_ptr<internal::Transport> transport = options.protocol == Protocol::kGrpc
                                                       ? internal::MakeGrpcTransport(options)
                                                       : internal::MakeRqpTransport(options);
  Status st = transport->Connect(options.connect_timeout_ms);
  if (!st.ok()) {
    transport->Shutdown();
    return st;
  }
  client->reset(new Client(options, std::move(transport)));
  return Status::Ok();
}

Client::Client(Options options, std::unique_ptr<internal::Transport> transport)
    : options_(std::move(options)), transport_(std::move(transport)) {}

Client::~Client() {
  assert(!internal::InCallbackThread() && "a Client must not be destroyed from a callback");
  transport_->Shutdown();
}

template <class Request, class Response>
void Client::CallAsync(Rpc rpc, Request request, Callback<Response> done) {
  struct Call {
    Request request;
    Response response;
    Callback<Response> done;
  };
  auto* call = new Call{std::move(request), Response(), std::move(done)};
  transport_->Start(rpc, call->request, &call->response, TimeoutFor(options_, rpc, call->request),
                    [call](Status status) {
                      std::unique_ptr<Call> owned(call);
                      owned->done(std::move(status), std::move(owned->response));
                    });
}

Status Client::CallBlocking(Rpc rpc, const google::protobuf::Message& request,
                            google::protobuf::Message* response) {
  // A completion thread that waits here could be the one that must deliver
  // the answer (RQP's reader): a bug, not a condition to report.
  assert(!internal::InCallbackThread() && "blocking ringq client call from a callback");
  // The callback owns the promise: set_value may still be running when
  // get() returns here.
  auto answered = std::make_shared<std::promise<Status>>();
  std::future<Status> answer = answered->get_future();
  transport_->Start(rpc, request, response, TimeoutFor(options_, rpc, request),
                    [answered](Status status) { answered->set_value(std::move(status)); });
  return answer.get();
}

#define RINGQ_CLIENT_DEFINE(Name, Req, Resp, Kind)                                   \
  void Client::Name(v1::Req request, Callback<v1::Resp> done) {                      \
    CallAsync<v1::Req, v1::Resp>(Rpc::k##Name, std::move(request), std::move(done)); \
  }                                                                                  \
  Status Client::Name(const v1::Req& request, v1::Resp* response) {                  \
    return CallBlocking(Rpc::k##Name, request, response);                            \
  }
RINGQ_CLIENT_UNARY_METHODS(RINGQ_CLIENT_DEFINE)
#undef RINGQ_CLIENT_DEFINE

std::unique_ptr<Subscription> Client::Subscribe(const v1::SubscribeOpen& open,
                                                SubscriptionHandlers handlers) {
  auto core = std::make_shared<internal::SubscriptionCore>(options_, std::move(handlers));
  v1::SubscribeRequest first;
  *first.mutable_open() = open;
  core->Attach(transport_->OpenStream(first, core));
  return std::make_unique<Subscription>(std::move(core));
}

}  // namespace ringq::client
