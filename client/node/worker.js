#!/usr/bin/env node
'use strict';
// A ringq worker: subscribes to queues with credits, prints each job and acks it.
//
//   node client/node/worker.js --addr 127.0.0.1:7420 --queue emails --credits 8
//
// How the stream works: the first SubscribeRequest carries `open` (queues and
// initial credits). The server then pushes at most `credits` un-settled jobs;
// each ack or fail we send gives one credit back, so a slow worker is never
// flooded. Acks and fails travel in later SubscribeRequests (several per
// message) and each is answered by a SettleResult whose `error` is null on
// success.
//
// With --fail the worker fails every job instead: the server retries it after
// its backoff until max_attempts, then dead-letters it (see ListDead/RetryDead).

const { parseArgs } = require('node:util');
const { grpc, connect, deadlineIn } = require('./ringq');

const USAGE = `usage: node worker.js [--addr HOST:PORT] [--queue NAME]... [--credits N] [--fail]
                      [--no-retry] [--max-jobs N] [--deadline-ms MS] [--proto-dir DIR]`;

const { values: args } = parseArgs({
  options: {
    help: { type: 'boolean', short: 'h', default: false },
    addr: { type: 'string', default: '127.0.0.1:7420' },
    queue: { type: 'string', multiple: true, default: ['demo'] },
    credits: { type: 'string', default: '8' },
    fail: { type: 'boolean', default: false },
    'no-retry': { type: 'boolean', default: false },
    // Exit after this many jobs were settled (0 = run until Ctrl-C).
    'max-jobs': { type: 'string', default: '0' },
    // End the stream after this many ms (0 = never).
    'deadline-ms': { type: 'string', default: '0' },
    'proto-dir': { type: 'string' },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const client = connect(args.addr, { protoDir: args['proto-dir'] });
const maxJobs = Number(args['max-jobs']);
const deadlineMs = Number(args['deadline-ms']);
const stream = client.Subscribe(deadlineMs > 0 ? { deadline: deadlineIn(deadlineMs) } : {});
let settled = 0;
let finished = false;

function finish(code, message) {
  if (finished) return;
  finished = true;
  if (message) (code ? console.error : console.log)(message);
  process.exitCode = code;
  stream.cancel();
  client.close();
}

stream.write({ open: { queues: args.queue, credits: Number(args.credits) } });

stream.on('data', (response) => {
  // Settle everything this message delivered in one request.
  const acks = [];
  const fails = [];
  for (const { job, lease_token } of response.deliveries) {
    console.log(`job id=${job.id} queue=${job.queue} attempt=${job.attempts}/${job.max_attempts} ` +
      `payload=${JSON.stringify(job.payload.toString())}`);
    if (args.fail) {
      const no_retry = args['no-retry'];
      fails.push({ id: job.id, lease_token, error: 'worker.js --fail', no_retry });
    } else {
      acks.push({ id: job.id, lease_token, result: Buffer.from('ok') });
    }
  }
  if (acks.length || fails.length) stream.write({ acks, fails });
  for (const result of response.results) {
    if (result.error) {
      const { code, message } = result.error;
      console.log(`  ${result.op} id=${result.id} error ${code}: ${message}`);
    } else if (result.op === 'SETTLE_OP_FAIL') {
      console.log(`  ${result.op} id=${result.id} -> ${result.state}`);
    }
    settled++;
  }
  if (maxJobs > 0 && settled >= maxJobs) finish(0, `settled ${settled} jobs, exiting`);
});

stream.on('error', (err) => {
  if (err.code === grpc.status.DEADLINE_EXCEEDED) {
    finish(0, `deadline reached after ${settled} settled jobs`);
  } else {
    finish(1, `stream failed: code ${err.code}: ${err.details}`);
  }
});
stream.on('end', () => finish(1, 'server ended the stream'));
process.on('SIGINT', () => finish(0));
