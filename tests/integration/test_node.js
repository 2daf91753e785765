#!/usr/bin/env node
'use strict';
// Integration test of ringqd through the Node client (client/node/ringq.js,
// @grpc/grpc-js with the .proto loaded at run time).
//
// Goal: the same promises as test_python.py, from a second language: pushed
// jobs reach a credit-bound Subscribe worker exactly once with their payloads,
// fails retry and then dead-letter, RetryDead revives, stale lease tokens and
// bad input get their documented status codes, and the examples in
// client/node run as their README says.
//
// Method: start ringqd on 127.0.0.1 with --grpc-port=0 and a temporary
// --data-dir, read the port from its `gRPC listening on HOST:PORT` line, run
// each test on its own queue. Every wait has a deadline; the server is killed
// when this process exits, whatever the reason.
//
//   node tests/integration/test_node.js --ringqd build/release/service/ringqd
//
// Needs client/node/node_modules (`npm ci --prefix client/node`); without it
// the test fails and says so. The last line is `node: N passed, M failed`.

const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const REPO = path.resolve(__dirname, '..', '..');
const LISTEN_RE = /gRPC listening on [^:]+:(\d+)/;
const STARTUP_TIMEOUT_MS = 15000;
const RPC_TIMEOUT_MS = 5000; // deadline of every unary call
const WAIT_TIMEOUT_MS = 5000; // how long a test waits for a delivery or result it expects
const STREAM_TIMEOUT_MS = 30000; // deadline of every Subscribe stream
const QUIET_MS = 400; // how long "nothing more arrives" is watched for
const STOP_TIMEOUT_MS = 10000; // SIGTERM to SIGKILL; ringqd's --shutdown-grace-ms defaults to 5000

const { values: args } = parseArgs({
  options: {
    ringqd: {
      type: 'string',
      default: process.env.RINGQD || path.join(REPO, 'build', 'release', 'service', 'ringqd'),
    },
    'node-dir': { type: 'string', default: path.join(REPO, 'client', 'node') },
    'proto-dir': { type: 'string', default: path.join(REPO, 'proto') },
    only: { type: 'string', short: 'k', default: '' },
  },
});

function bail(message) {
  console.error(`test_node.js: ${message}`);
  console.log('node: 0 passed, 1 failed');
  process.exit(1);
}

const nodeDir = path.resolve(args['node-dir']);
for (const dep of ['@grpc/grpc-js', '@grpc/proto-loader']) {
  if (!fs.existsSync(path.join(nodeDir, 'node_modules', dep, 'package.json'))) {
    bail(`${dep} is not installed in ${nodeDir}/node_modules: ` +
      'run `npm ci --prefix client/node` from the repository root');
  }
}
if (!fs.existsSync(args.ringqd)) bail(`ringqd binary not found: ${args.ringqd} (pass --ringqd)`);

const { grpc, connect, deadlineIn } = require(path.join(nodeDir, 'ringq.js'));
const status = grpc.status;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the server -------------------------------------------------------------------------------

class Server {
  constructor(binary, dataDir, logPath) {
    this.binary = binary;
    this.dataDir = dataDir;
    this.logPath = logPath;
    this.proc = null;
    this.exitCode = undefined;
  }

  // Flags that keep parallel test runs apart, passed only if this ringqd has them.
  optionalFlags() {
    const help = spawnSync(this.binary, ['--help'], { encoding: 'utf8', timeout: 10000 });
    const text = `${help.stdout || ''}${help.stderr || ''}`;
    return text.includes('--http-port') ? ['--http-port', '0'] : [];
  }

  start() {
    const argv = ['--host', '127.0.0.1', '--grpc-port', '0', '--rqp-port', '0', '--data-dir', this.dataDir,
      '--shards', '2', ...this.optionalFlags()];
    const log = fs.openSync(this.logPath, 'w');
    this.proc = spawn(this.binary, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    // Dies with us: on a normal exit, an uncaught error or SIGTERM (ctest's timeout).
    process.on('exit', () => this.kill('SIGKILL'));
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => {
      this.exitCode = code === null ? `signal ${signal}` : code;
      resolve(this.exitCode);
    }));
    return new Promise((resolve, reject) => {
      let pending = '';
      let found = false;
      const timer = setTimeout(() => reject(new Error(
        `ringqd printed no 'gRPC listening on' line within ${STARTUP_TIMEOUT_MS} ms:\n` +
        this.logTail())), STARTUP_TIMEOUT_MS);
      const onData = (chunk) => {
        fs.writeSync(log, chunk);
        if (found) return;
        pending += chunk.toString();
        const match = LISTEN_RE.exec(pending);
        if (match) {
          found = true;
          clearTimeout(timer);
          resolve(`127.0.0.1:${match[1]}`);
        }
        pending = pending.slice(-4096);
      };
      this.proc.stdout.on('data', onData);
      this.proc.stderr.on('data', onData);
      this.proc.on('error', (err) => { clearTimeout(timer); reject(err); });
      this.exited.then((code) => {
        if (found) return;
        clearTimeout(timer);
        reject(new Error(`ringqd exited with ${code} before listening:\n${this.logTail()}`));
      });
    });
  }

  kill(signal) {
    if (this.proc && this.exitCode === undefined) this.proc.kill(signal);
  }

  // SIGTERM, then SIGKILL if it is still running after STOP_TIMEOUT_MS. Resolves to the exit code.
  async stop() {
    if (!this.proc) return undefined;
    if (this.exitCode === undefined) {
      this.kill('SIGTERM');
      const timer = setTimeout(() => {
        console.error(`ringqd did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; killing it`);
        this.kill('SIGKILL');
      }, STOP_TIMEOUT_MS);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exitCode;
  }

  logTail(lines = 40) {
    try {
      const all = fs.readFileSync(this.logPath, 'utf8').split('\n');
      return all.slice(-lines).map((l) => `  | ${l}`).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

// --- client helpers ---------------------------------------------------------------------------

// A unary call as a Promise, with a deadline.
function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadlineIn(RPC_TIMEOUT_MS) }, (err, reply) =>
      err ? reject(err) : resolve(reply));
  });
}

// Awaits `promise`, which must reject with gRPC status `code`; returns the error.
async function expectStatus(code, promise, what) {
  let reply;
  try {
    reply = await promise;
  } catch (err) {
    assert.equal(err.code, code, `${what}: expected status ${code}, got ${err.code}: ` +
      `${err.details}`);
    return err;
  }
  assert.fail(`${what}: expected status ${code}, got OK: ${JSON.stringify(reply)}`);
}

// A Subscribe stream whose deliveries and results are buffered, so every wait has a deadline.
class Subscription {
  constructor(client, queues, credits) {
    this.stream = client.Subscribe({ deadline: deadlineIn(STREAM_TIMEOUT_MS) });
    this.deliveries = [];
    this.results = [];
    this.ended = null;
    this.closing = false;
    this.waiters = new Set();
    this.stream.on('data', (response) => {
      this.deliveries.push(...response.deliveries);
      this.results.push(...response.results);
      this.notify();
    });
    this.stream.on('error', (err) => {
      this.ended = `status ${err.code}: ${err.details}`;
      this.notify();
    });
    this.stream.on('end', () => { this.ended = this.ended || 'EOF'; this.notify(); });
    this.stream.write({ open: { queues, credits } });
  }

  notify() {
    for (const wake of this.waiters) wake();
  }

  // Resolves on the next response, stream end, or after `ms`.
  wait(ms) {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.waiters.add(wake);
    });
  }

  async take(buffer, count, what, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (buffer.length < count) {
      if (this.ended && !this.closing) assert.fail(`Subscribe stream ended: ${this.ended}`);
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`got ${buffer.length} of ${count} ${what} within ${timeoutMs} ms`);
      await this.wait(left);
    }
    return buffer.splice(0, count);
  }

  takeDeliveries(count, timeoutMs = WAIT_TIMEOUT_MS) {
    return this.take(this.deliveries, count, 'deliveries', timeoutMs);
  }

  takeResults(count, timeoutMs = WAIT_TIMEOUT_MS) {
    return this.take(this.results, count, 'settle results', timeoutMs);
  }

  // Fails if any delivery arrives within `ms`.
  async expectQuiet(ms = QUIET_MS) {
    await sleep(ms);
    assert.deepEqual(this.deliveries.map((d) => d.job.id), [], 'unexpected deliveries');
  }

  ack(deliveries) {
    this.stream.write({
      acks: deliveries.map((d) => ({ id: d.job.id, lease_token: d.lease_token })),
    });
  }

  fail(delivery, error) {
    const { job, lease_token } = delivery;
    this.stream.write({ fails: [{ id: job.id, lease_token, error }] });
  }

  credits(count) {
    this.stream.write({ credits: count });
  }

  close() {
    this.closing = true;
    this.stream.end();
    this.stream.cancel();
  }
}

function checkResultsOk(results, op, ids, what) {
  assert.deepEqual(results.map((r) => r.id).sort(), [...ids].sort(), `${what}: settled ids`);
  for (const r of results) {
    assert.equal(r.error, null, `${what}: job ${r.id} settle error ${JSON.stringify(r.error)}`);
    assert.equal(r.op, op, `${what}: op of job ${r.id}`);
  }
}

// --- the tests --------------------------------------------------------------------------------

class Context {
  constructor(client, addr) {
    this.client = client;
    this.addr = addr;
    this.testName = '';
  }

  queue() {
    return `js.${this.testName}`.slice(0, 128);
  }

  call(method, request) {
    return unary(this.client, method, request);
  }

  async push(queue, payload, spec = {}) {
    const job = { queue, payload: Buffer.from(payload), ...spec };
    const reply = await this.call('Push', { job });
    assert.notEqual(reply.id, '0', `Push of ${payload} returned id 0`);
    assert.equal(reply.duplicate, false, `Push of ${payload} reported duplicate`);
    return reply.id;
  }

  async stats(queue) {
    const reply = await this.call('Stats', { queue });
    const matching = reply.queues.filter((q) => q.queue === queue);
    assert.equal(matching.length, 1, `Stats(queue=${queue}) entries for it`);
    return matching[0];
  }

  // Fetches until `count` deliveries arrived (bounded by WAIT_TIMEOUT_MS).
  async fetch(queue, count, waitMs) {
    const deliveries = [];
    const deadline = Date.now() + WAIT_TIMEOUT_MS;
    while (deliveries.length < count) {
      assert.ok(Date.now() < deadline, `Fetch got ${deliveries.length} of ${count} jobs`);
      const max = count - deliveries.length;
      const reply = await this.call('Fetch', { queue, max, wait_ms: waitMs });
      deliveries.push(...reply.deliveries);
    }
    assert.equal(deliveries.length, count, 'Fetch deliveries');
    return deliveries;
  }
}

const tests = {
  // Pushed jobs reach a Subscribe worker exactly once with their payloads; acks complete them.
  async push_subscribe_ack(ctx) {
    const q = ctx.queue();
    const count = 12;
    const pushed = new Map();
    for (let i = 0; i < count; i++) pushed.set(await ctx.push(q, `node-${i}`), `node-${i}`);
    assert.equal(pushed.size, count, 'distinct ids');
    const received = new Map();
    const sub = new Subscription(ctx.client, [q], 3);
    try {
      while (received.size < count) {
        // Take what has arrived (at least one), ack it all in one message.
        const batch = await sub.takeDeliveries(1);
        batch.push(...sub.deliveries.splice(0));
        for (const d of batch) {
          assert.ok(!received.has(d.job.id), `job ${d.job.id} delivered twice`);
          assert.equal(d.job.queue, q, `queue of job ${d.job.id}`);
          assert.equal(d.job.state, 'JOB_STATE_ACTIVE', `state of job ${d.job.id}`);
          assert.equal(d.job.attempts, 1, `attempts of job ${d.job.id}`);
          assert.notEqual(d.lease_token, '0', `lease token of job ${d.job.id}`);
          received.set(d.job.id, d.job.payload.toString());
        }
        sub.ack(batch);
      }
      assert.deepEqual(received, pushed, 'delivered {id: payload}');
      checkResultsOk(await sub.takeResults(count), 'SETTLE_OP_ACK', pushed.keys(), 'acks');
      await sub.expectQuiet();
    } finally {
      sub.close();
    }
    const stats = await ctx.stats(q);
    assert.equal(stats.pushed_total, String(count), 'Stats.pushed_total');
    assert.equal(stats.completed_total, String(count), 'Stats.completed_total');
    assert.deepEqual([stats.waiting, stats.delayed, stats.active], ['0', '0', '0'],
      'Stats (waiting, delayed, active)');
  },

  // With credits=2 the server pushes 2 of 5 jobs, one more per ack, more on new credits.
  async credits_bound_deliveries(ctx) {
    const q = ctx.queue();
    const sub = new Subscription(ctx.client, [q], 2);
    try {
      const ids = [];
      for (let i = 0; i < 5; i++) ids.push(await ctx.push(q, `c${i}`));
      const first = await sub.takeDeliveries(2);
      await sub.expectQuiet();
      sub.ack(first.slice(0, 1));
      const second = await sub.takeDeliveries(1);
      await sub.expectQuiet();
      sub.credits(2);
      const third = await sub.takeDeliveries(2);
      await sub.expectQuiet();
      const delivered = [...first, ...second, ...third];
      assert.deepEqual(delivered.map((d) => d.job.id), ids, 'delivery order (FIFO)');
      sub.ack(delivered.slice(1));
      checkResultsOk(await sub.takeResults(5), 'SETTLE_OP_ACK', ids, 'acks');
    } finally {
      sub.close();
    }
  },

  // max_attempts=2: two fails dead-letter the job; ListDead shows it; RetryDead revives it.
  async fail_until_dead_then_retry(ctx) {
    const q = ctx.queue();
    const id = await ctx.push(q, 'doomed', {
      max_attempts: 2,
      backoff: { kind: 'BACKOFF_KIND_FIXED', base_ms: 10 },
    });
    const sub = new Subscription(ctx.client, [q], 1);
    try {
      const [d1] = await sub.takeDeliveries(1);
      assert.deepEqual([d1.job.id, d1.job.attempts], [id, 1], 'first delivery (id, attempts)');
      sub.fail(d1, 'boom 1');
      const [r1] = await sub.takeResults(1);
      checkResultsOk([r1], 'SETTLE_OP_FAIL', [id], 'first fail');
      assert.ok(['JOB_STATE_DELAYED', 'JOB_STATE_WAITING'].includes(r1.state),
        `state after first fail: ${r1.state}`);
      const [d2] = await sub.takeDeliveries(1);
      assert.deepEqual([d2.job.id, d2.job.attempts], [id, 2], 'second delivery (id, attempts)');
      sub.fail(d2, 'boom 2');
      const [r2] = await sub.takeResults(1);
      checkResultsOk([r2], 'SETTLE_OP_FAIL', [id], 'second fail');
      assert.equal(r2.state, 'JOB_STATE_DEAD', 'state after the last attempt failed');
      await sub.expectQuiet();

      const dead = await ctx.call('ListDead', { queue: q });
      assert.deepEqual(dead.jobs.map((j) => j.id), [id], 'ListDead ids');
      assert.equal(dead.jobs[0].state, 'JOB_STATE_DEAD', 'dead job state');
      assert.equal(dead.jobs[0].last_error, 'boom 2', 'dead job last_error');
      assert.equal(dead.jobs[0].payload.toString(), 'doomed', 'dead job payload');

      const retried = await ctx.call('RetryDead', { queue: q, ids: [id] });
      assert.equal(retried.count, '1', 'RetryDead count');
      const [d3] = await sub.takeDeliveries(1);
      assert.deepEqual([d3.job.id, d3.job.attempts], [id, 1],
        'delivery after RetryDead (id, attempts reset)');
      sub.ack([d3]);
      checkResultsOk(await sub.takeResults(1), 'SETTLE_OP_ACK', [id], 'ack after RetryDead');
    } finally {
      sub.close();
    }
    const job = await ctx.call('GetJob', { id });
    assert.equal(job.state, 'JOB_STATE_COMPLETED', 'state after RetryDead and ack');
  },

  // After a fail and a new delivery, the first lease token gets FAILED_PRECONDITION.
  async stale_token(ctx) {
    const q = ctx.queue();
    const id = await ctx.push(q, 'twice', { max_attempts: 5 });
    const [d1] = await ctx.fetch(q, 1, 1000);
    const failed = await ctx.call('Fail', {
      id, lease_token: d1.lease_token, error: 'again', retry_delay_ms: 1,
    });
    assert.ok(['JOB_STATE_DELAYED', 'JOB_STATE_WAITING'].includes(failed.state),
      `Fail state: ${failed.state}`);
    const [d2] = await ctx.fetch(q, 1, 2000);
    assert.deepEqual([d2.job.id, d2.job.attempts], [id, 2], 'second Fetch (id, attempts)');
    assert.notEqual(d2.lease_token, d1.lease_token, 'second delivery reused the lease token');
    await expectStatus(status.FAILED_PRECONDITION,
      ctx.call('Ack', { id, lease_token: d1.lease_token }), 'Ack with a stale token');
    await expectStatus(status.FAILED_PRECONDITION,
      ctx.call('Extend', { id, lease_token: d1.lease_token, lease_ms: 1000 }),
      'Extend with a stale token');
    await ctx.call('Ack', { id, lease_token: d2.lease_token });
    const job = await ctx.call('GetJob', { id });
    assert.equal(job.state, 'JOB_STATE_COMPLETED', 'state after ack with the current token');
  },

  // Bad input gets INVALID_ARGUMENT; a non-atomic batch reports it at its index only.
  async invalid_argument(ctx) {
    const q = ctx.queue();
    for (const [what, job] of [
      ['bad queue name', { queue: 'bad queue!', payload: Buffer.from('x') }],
      ['empty queue name', { queue: '', payload: Buffer.from('x') }],
      ['lease_ms < 100', { queue: q, payload: Buffer.from('x'), lease_ms: 1 }],
    ]) {
      const err = await expectStatus(status.INVALID_ARGUMENT, ctx.call('Push', { job }),
        `Push with ${what}`);
      assert.ok(err.details, `Push with ${what}: INVALID_ARGUMENT without a message`);
    }
    const jobs = [
      { queue: q, payload: Buffer.from('b0') },
      { queue: 'no spaces allowed', payload: Buffer.from('b1') },
      { queue: q, payload: Buffer.from('b2') },
    ];
    const reply = await ctx.call('PushBatch', { jobs, atomic: false });
    assert.equal(reply.results.length, 3, 'PushBatch result count');
    assert.equal(reply.results[1].error?.code, status.INVALID_ARGUMENT, 'results[1] error code');
    assert.equal(reply.results[1].id, '0', 'results[1].id');
    for (const i of [0, 2]) {
      assert.equal(reply.results[i].error, null, `results[${i}] error`);
      assert.notEqual(reply.results[i].id, '0', `results[${i}].id`);
    }
    const deliveries = await ctx.fetch(q, 2, 1000);
    assert.deepEqual(deliveries.map((d) => d.job.payload.toString()).sort(), ['b0', 'b2'],
      'fetched payloads');
    for (const d of deliveries) await ctx.call('Ack', { id: d.job.id, lease_token: d.lease_token });
  },

  // client/node/push.js and worker.js work as the README says.
  async examples(ctx) {
    const q = ctx.queue();
    const run = (script, ...argv) => {
      const proc = spawnSync(process.execPath, [path.join(nodeDir, script), ...argv],
        { encoding: 'utf8', timeout: 20000 });
      assert.equal(proc.status, 0,
        `${script} exited with ${proc.status}:\n${proc.stdout}${proc.stderr}`);
      return proc.stdout;
    };
    let out = run('push.js', '--addr', ctx.addr, '--queue', q, '--count', '3', '--prefix', 'ex',
      '--proto-dir', args['proto-dir']);
    assert.equal((out.match(/pushed id=\d+/g) || []).length, 3, `push.js output:\n${out}`);
    out = run('push.js', '--addr', ctx.addr, '--queue', q, '--count', '2', '--prefix', 'bx',
      '--batch', '--proto-dir', args['proto-dir']);
    assert.equal((out.match(/pushed id=\d+/g) || []).length, 2, `push.js --batch output:\n${out}`);
    out = run('worker.js', '--addr', ctx.addr, '--queue', q, '--credits', '2', '--max-jobs', '5',
      '--deadline-ms', '15000', '--proto-dir', args['proto-dir']);
    for (const payload of ['ex-0', 'ex-1', 'ex-2', 'bx-0', 'bx-1']) {
      assert.ok(out.includes(`payload="${payload}"`),
        `worker.js did not print ${payload}:\n${out}`);
    }
    assert.equal((await ctx.stats(q)).completed_total, '5', 'Stats.completed_total');
  },
};

// --- the runner -------------------------------------------------------------------------------

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ringq-it-node-'));
  const server = new Server(path.resolve(args.ringqd), path.join(tmp, 'data'),
    path.join(tmp, 'ringqd.log'));
  const names = Object.keys(tests).filter((n) => n.includes(args.only));
  let passed = 0;
  let failed = names.slice();
  const started = Date.now();
  let client = null;
  try {
    const addr = await server.start();
    console.log(`ringqd listening on ${addr} (log ${server.logPath})`);
    client = connect(addr, { protoDir: args['proto-dir'] });
    await new Promise((resolve, reject) => client.waitForReady(deadlineIn(STARTUP_TIMEOUT_MS),
      (err) => err ? reject(err) : resolve()));
    const ctx = new Context(client, addr);
    failed = [];
    for (const [index, name] of names.entries()) {
      ctx.testName = name;
      const t0 = Date.now();
      try {
        await tests[name](ctx);
        passed++;
        console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(2)}s)`);
      } catch (err) {
        failed.push(name);
        const detail = err instanceof assert.AssertionError ? err.message : err.stack || err;
        console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(2)}s): ${detail}`);
      }
      if (server.exitCode !== undefined) {
        console.log(`ringqd exited with ${server.exitCode} during ${name}:\n${server.logTail()}`);
        failed.push(...names.slice(index + 1));
        break;
      }
    }
  } catch (err) {
    console.log(`FAIL setup: ${err.message || err}`);
  } finally {
    if (client) client.close();
    const code = await server.stop();
    if (code !== 0 && code !== undefined) {
      console.log(`ringqd exited with ${code} on SIGTERM:\n${server.logTail()}`);
      failed.push('clean shutdown');
    }
  }
  if (failed.length) {
    console.log(`server log tail:\n${server.logTail()}\nkept ${tmp} for inspection`);
  } else {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`took ${((Date.now() - started) / 1000).toFixed(1)}s; ` +
    `failed: ${failed.join(', ') || 'none'}`);
  console.log(`node: ${passed} passed, ${failed.length} failed`);
  return failed.length ? 1 : 0;
}

// ctest's timeout sends SIGTERM: exit through process.on('exit'), which kills the server.
process.on('SIGTERM', () => process.exit(1));
main().then((code) => { process.exitCode = code; }, (err) => {
  console.error(err);
  process.exitCode = 1;
});
