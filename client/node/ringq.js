'use strict';
// Loads ringq's gRPC API from proto/ringq/v1/queue.proto at run time (no code
// generation) and connects a client. Shared by push.js, worker.js and the
// integration test; copy it along with them.
//
// Conversions (proto-loader options below):
// - field names as in the .proto (snake_case): job.lease_token, not leaseToken;
// - uint64 ids and lease tokens as decimal strings (JavaScript numbers lose
//   precision above 2^53), and sent back as those strings;
// - enums as their names ('JOB_STATE_DEAD'), bytes as Buffers;
// - unset scalar fields read as their zero value, unset message fields
//   (SettleResult.error, PushResult.error) as null.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_PROTO_DIR =
  process.env.RINGQ_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');

const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true,
};

// Returns the ringq.v1 package object: its Queue client constructor and types.
function loadApi(protoDir = DEFAULT_PROTO_DIR) {
  const definition = protoLoader.loadSync('ringq/v1/queue.proto', {
    ...LOADER_OPTIONS,
    includeDirs: [protoDir],
  });
  return grpc.loadPackageDefinition(definition).ringq.v1;
}

// A Queue client for host:port over plaintext HTTP/2.
function connect(address, { protoDir } = {}) {
  const api = loadApi(protoDir);
  return new api.Queue(address, grpc.credentials.createInsecure(), {
    // Pass limits explicitly instead of relying on library defaults.
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    'grpc.max_send_message_length': 64 * 1024 * 1024,
  });
}

// A deadline `ms` from now, for the `deadline` call option.
function deadlineIn(ms) {
  return new Date(Date.now() + ms);
}

module.exports = { grpc, loadApi, connect, deadlineIn, DEFAULT_PROTO_DIR };
