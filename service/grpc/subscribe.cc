// Subscribe over gRPC: a bidi reactor that is the sink of an
// api::Subscription (service/api/subscription.h holds the semantics: credits,
// settles, release on close). This file only moves messages between gRPC and
// the core and counts them.
//
// Lifetime: gRPC owns the reactor until OnDone (deleted there); the core is
// shared by the reactor, the shards and their tasks, and calls no sink method
// after Finish, which gRPC always follows with OnDone.
#include <memory>

#include "service/api/subscription.h"
#include "service/grpc/convert.h"
#include "service/grpc/streams.h"

namespace ringq::grpcsvc {

namespace {

class SubscribeCall final
    : public grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>,
      public api::SubscriptionSink {
 public:
  SubscribeCall(engine::Engine& engine, const StreamLimits& limits, StreamRegistry& registry,
                GrpcProbe* probe)
      : probe_(probe),
        core_(std::make_shared<api::Subscription>(engine, limits.settle_pending_max, registry,
                                                  this)) {
    if (probe_ != nullptr) probe_->Started(Rpc::kSubscribe);
    core_->Begin();
  }

  // ---------------------------------------------------------- sink

  bool StartWrite(const v1::SubscribeResponse& msg) override {
    if (probe_ != nullptr) probe_->Sent(msg.ByteSizeLong());
    ServerBidiReactor::StartWrite(&msg);
    return false;
  }

  void StartRead() override { ServerBidiReactor::StartRead(&in_); }

  void Finish(const engine::Status& status) override {
    const grpc::Status st = ToGrpc(status);
    if (probe_ != nullptr) probe_->Finished(Rpc::kSubscribe, st.error_code());
    ServerBidiReactor::Finish(st);
  }

  // ---------------------------------------------------------- reactor

  void OnReadDone(bool ok) override {
    if (!ok) {
      core_->OnReadEof();
      return;
    }
    if (probe_ != nullptr) probe_->Received(in_.ByteSizeLong());
    core_->OnRead(in_);
  }

  void OnWriteDone(bool ok) override { core_->OnWriteDone(ok); }
  void OnCancel() override { core_->OnCancel(); }
  void OnDone() override { delete this; }

 private:
  GrpcProbe* const probe_;
  std::shared_ptr<api::Subscription> core_;
  v1::SubscribeRequest in_;  // reader only
};

}  // namespace

grpc::ServerBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse>* NewSubscribe(
    engine::Engine& engine, const StreamLimits& limits, StreamRegistry& registry,
    GrpcProbe* probe) {
  return new SubscribeCall(engine, limits, registry, probe);
}

}  // namespace ringq::grpcsvc
