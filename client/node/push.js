#!/usr/bin/env node
'use strict';
// Pushes N jobs to a ringq queue and prints their ids.
//
//   node client/node/push.js --addr 127.0.0.1:7420 --queue emails --count 10
//
// Each job's payload is "<prefix>-<i>". With --batch the jobs go in one
// PushBatch call instead of one Push each.

const { parseArgs } = require('node:util');
const { connect, deadlineIn } = require('./ringq');

const USAGE = `usage: node push.js [--addr HOST:PORT] [--queue NAME] [--count N] [--prefix P]
                    [--max-attempts N] [--batch] [--proto-dir DIR] [--timeout-ms MS]`;

const { values: args } = parseArgs({
  options: {
    help: { type: 'boolean', short: 'h', default: false },
    addr: { type: 'string', default: '127.0.0.1:7420' },
    queue: { type: 'string', default: 'demo' },
    count: { type: 'string', default: '10' },
    prefix: { type: 'string', default: 'job' },
    'max-attempts': { type: 'string', default: '0' }, // 0 = server default
    batch: { type: 'boolean', default: false },
    'proto-dir': { type: 'string' },
    'timeout-ms': { type: 'string', default: '10000' },
  },
});
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const client = connect(args.addr, { protoDir: args['proto-dir'] });
const timeoutMs = Number(args['timeout-ms']);

// Unary calls take a callback; wrap one in a Promise.
function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadlineIn(timeoutMs) }, (err, reply) =>
      err ? reject(err) : resolve(reply));
  });
}

async function main() {
  const jobs = [];
  for (let i = 0; i < Number(args.count); i++) {
    jobs.push({
      queue: args.queue,
      payload: Buffer.from(`${args.prefix}-${i}`),
      max_attempts: Number(args['max-attempts']),
    });
  }
  if (args.batch) {
    // atomic: false: valid jobs are pushed, each invalid one reports its own error.
    const reply = await call('PushBatch', { jobs, atomic: false });
    let failed = 0;
    reply.results.forEach((result, i) => {
      if (result.error) {
        failed++;
        console.log(`${jobs[i].payload}: error ${result.error.code}: ${result.error.message}`);
      } else {
        console.log(`pushed id=${result.id} payload=${jobs[i].payload}`);
      }
    });
    return failed ? 1 : 0;
  }
  for (const job of jobs) {
    const reply = await call('Push', { job });
    const note = reply.duplicate ? ' (duplicate)' : '';
    console.log(`pushed id=${reply.id} payload=${job.payload}${note}`);
  }
  return 0;
}

main()
  .then((code) => { process.exitCode = code; })
  .catch((err) => {
    const code = err.code !== undefined ? `code ${err.code}: ` : '';
    console.error(`push failed: ${code}${err.details || err.message}`);
    process.exitCode = 1;
  })
  .finally(() => client.close());
