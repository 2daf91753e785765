// The peers' load generator: the same scenarios as ringq-bench (push single,
// pipelined and batched, process, steady, open-loop latency), run against one
// peer through an adapter that uses that peer's own client library.
//
// usage: node harness.js --peer=bullmq|redis-list|beanstalkd|nats --url=... \
//          --label=TEXT --durability=TEXT [--server-pid=PID] [--json=FILE] \
//          [--push-s=3 --steady-s=3 --latency-s=5 --rate=5000 --payload=100 \
//           --jobs-max=N --drain-s=60 --scenarios=push,process,steady,latency]
//
// Each job's body is "<seq> <send time us> " padded to the payload size with
// a fixed filler; workers check the body and count every sequence number, so
// each row reports whether every pushed job was processed exactly once.
// Closed-loop latencies are service times (from the actual send). Open-loop
// latencies are measured from the INTENDED send time (coordinated-omission
// corrected); Node's timers wake about 1 ms late, and that lag is reported
// and included, as it would be for any generator.
'use strict';
const fs = require('fs');

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const m = /^--([^=]+)=(.*)$/.exec(a);
  if (!m) throw new Error(`bad argument ${a} (flags are --name=value)`);
  return [m[1], m[2]];
}));
const opt = {
  peer: args.peer,
  url: args.url,
  label: args.label || args.peer,
  durability: args.durability || 'unknown',
  serverVersion: args['server-version'] || 'unknown',
  serverPid: Number(args['server-pid'] || 0),
  json: args.json || '',
  pushS: Number(args['push-s'] || 3),
  steadyS: Number(args['steady-s'] || 3),
  latencyS: Number(args['latency-s'] || 5),
  rate: Number(args.rate || 5000),
  payload: Number(args.payload || 100),
  jobsMax: Number(args['jobs-max'] || 2000000),
  drainS: Number(args['drain-s'] || 60),
  scenarios: (args.scenarios || 'push,process,steady,latency').split(','),
  unaryConns: Number(args.connections || 8),
  pipeConns: 2, pipeWindow: 512, batchConns: 4, batch: 100, workerConns: 2,
};
if (!(opt.pushS > 0 && opt.pushS <= 3600 && opt.rate > 0 && opt.rate <= 1e6 && opt.jobsMax > 0)) {
  throw new Error('a duration, rate or count is out of range');
}

const t0 = process.hrtime.bigint();
const nowUs = () => Number(process.hrtime.bigint() - t0) / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ payloads, ledger

const FILLER = 'x'.repeat(opt.payload);
function makeBody(seq, tUs) {
  const head = `${seq} ${Math.round(tUs)} `;
  return head + FILLER.slice(head.length);
}
const mix = (s) => (Math.imul(s ^ (s >>> 16), 0x45d9f3b) >>> 0);

class Ledger {
  constructor(capacity) {
    this.capacity = capacity;
    this.seen = new Uint8Array(capacity);
    this.pushedSet = new Uint8Array(capacity);
    this.pushed = 0; this.pushErrors = 0; this.processed = 0;
    this.duplicates = 0; this.corrupt = 0; this.firstError = '';
    this.sumPushed = 0; this.sumProcessed = 0;
    this.e2e = []; this.lastDeliveryUs = 0;
  }
  onPushed(seq, err) {
    if (err) {
      if (this.pushErrors++ === 0) this.firstError = String(err && err.message || err);
      return;
    }
    this.pushedSet[seq] = 1; this.pushed++;
    this.sumPushed = (this.sumPushed + mix(seq)) >>> 0;
  }
  onJob(body) {
    const now = nowUs();
    const s = typeof body === 'string' ? body : body.toString();
    const sp1 = s.indexOf(' '); const sp2 = s.indexOf(' ', sp1 + 1);
    const seq = Number(s.slice(0, sp1)); const t = Number(s.slice(sp1 + 1, sp2));
    if (s.length !== opt.payload || !(seq >= 0 && seq < this.capacity) ||
        s.slice(sp2 + 1) !== FILLER.slice(sp2 + 1)) { this.corrupt++; return; }
    if (this.seen[seq]++ !== 0) { this.duplicates++; return; }
    this.processed++;
    this.sumProcessed = (this.sumProcessed + mix(seq)) >>> 0;
    this.e2e.push(now - t);
    this.lastDeliveryUs = now;
  }
  verify() {
    let missing = 0;
    for (let i = 0; i < this.capacity; i++) if (this.pushedSet[i] && !this.seen[i]) missing++;
    const ok = missing === 0 && this.duplicates === 0 && this.corrupt === 0 &&
      this.processed === this.pushed && this.sumPushed === this.sumProcessed;
    return { ok, pushed: this.pushed, processed: this.processed, missing,
      duplicates: this.duplicates, corrupt: this.corrupt, id_mismatch: 0,
      checksum_pushed: this.sumPushed, checksum_processed: this.sumProcessed };
  }
}

function summarize(us) {
  if (!us.length) return null;
  const a = Float64Array.from(us).sort();
  const q = (p) => a[Math.min(a.length - 1, Math.max(0, Math.ceil(p * a.length) - 1))];
  let sum = 0; for (const v of a) sum += v;
  return { count: a.length, p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99),
    p999_us: q(0.999), max_us: a[a.length - 1], mean_us: sum / a.length };
}

// ------------------------------------------------------------------ server cost

function serverCpuS() {
  if (!opt.serverPid) return null;
  try {
    const s = fs.readFileSync(`/proc/${opt.serverPid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;  // utime, stime (fields 14, 15) in ticks
  } catch { return null; }
}
function serverRss() {
  if (!opt.serverPid) return null;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${opt.serverPid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch { return null; }
}
function cpuWindow() {
  const s0 = serverCpuS(); const c0 = process.cpuUsage();
  return (jobs, row) => {
    if (!jobs) return;
    const s1 = serverCpuS(); const c1 = process.cpuUsage(c0);
    row.server_cpu_s_per_million = s0 !== null && s1 !== null ? (s1 - s0) * 1e6 / jobs : null;
    row.client_cpu_s_per_million = (c1.user + c1.system) / 1e6 * 1e6 / jobs;
  };
}

// ------------------------------------------------------------------ scenarios

let rowId = 0;
const rows = [];
const adapter = require(`./${opt.peer}.js`).create(opt);

function base(scenario, api, measure) {
  return { scenario, api, latency_measure: measure, payload_bytes: opt.payload, queues: 1,
    params: '', seconds: 0, jobs: 0, jobs_per_s: 0, push_latency: null, e2e_latency: null,
    send_lag: null, errors: 0, first_error: '', verify: null,
    server_cpu_s_per_million: null, client_cpu_s_per_million: null,
    server_rss_bytes_per_million_waiting: null };
}

// Closed loop: `chains` loops, each with one operation in flight, until the
// deadline or the job budget. op(producer, seqs) sends seqs and resolves.
async function closedLoop(producers, chainsPer, perOp, ledger, lat, seconds) {
  const deadline = nowUs() + seconds * 1e6;
  let next = 0;
  const cap = Math.min(opt.jobsMax, ledger.capacity);
  const chain = async (p) => {
    let errorsInRow = 0;
    while (nowUs() < deadline && next < cap && errorsInRow < 100) {
      const first = next; const n = Math.min(perOp, cap - first); next += n;
      const start = nowUs();
      const bodies = [];
      for (let k = 0; k < n; k++) bodies.push(makeBody(first + k, start));
      try {
        if (perOp === 1) await p.push(bodies[0]); else await p.pushBatch(bodies);
        for (let k = 0; k < n; k++) ledger.onPushed(first + k, null);
        errorsInRow = 0;
      } catch (e) {
        for (let k = 0; k < n; k++) ledger.onPushed(first + k, e);
        errorsInRow++;
      }
      lat.push(nowUs() - start);
    }
  };
  const started = nowUs();
  const all = [];
  for (const p of producers) for (let w = 0; w < chainsPer; w++) all.push(chain(p));
  await Promise.all(all);
  return { seconds: (nowUs() - started) / 1e6, issued: next };
}

async function drain(queue, ledger, row) {
  const workers = await adapter.startWorkers(queue, opt.workerConns, (b) => ledger.onJob(b));
  const deadline = nowUs() + opt.drainS * 1e6;
  while (ledger.processed < ledger.pushed && nowUs() < deadline) await sleep(2);
  try { await workers.stop(); } catch (e) { row.errors++; row.first_error ||= String(e); }
}

function finish(row, ledger) {
  row.verify = ledger.verify();
  row.errors += ledger.pushErrors;
  row.first_error ||= ledger.firstError;
  rows.push(row);
  print(row);
}

async function pushRow(kind) {
  const queue = `rqb-${process.pid}-${++rowId}`;
  const ledger = new Ledger(opt.jobsMax);
  const lat = [];
  const single = kind === 'single';
  const row = base('push', single ? 'single' : 'pipelined', 'closed-loop service time');
  const n = single ? opt.unaryConns : opt.pipeConns;
  const producers = await Promise.all(Array.from({ length: n }, () => adapter.producer(queue)));
  row.params = single ? `${n} conns x 1 in flight` : `${n} conns x ${opt.pipeWindow} in flight`;
  const cpu = cpuWindow();
  const r = await closedLoop(producers, single ? 1 : opt.pipeWindow, 1, ledger, lat, opt.pushS);
  row.seconds = r.seconds; row.jobs = ledger.pushed; row.jobs_per_s = row.jobs / r.seconds;
  cpu(row.jobs, row);
  row.push_latency = summarize(lat);
  await Promise.all(producers.map((p) => p.close()));
  await drain(queue, ledger, row);
  await adapter.cleanup(queue);
  finish(row, ledger);
}

async function batchAndProcess() {
  const queue = `rqb-${process.pid}-${++rowId}`;
  const ledger = new Ledger(opt.jobsMax);
  const lat = [];
  const push = base('push', 'batch', 'closed-loop service time (per batch)');
  push.params = `${opt.batchConns} conns x 1 batch of ${opt.batch} in flight (${adapter.batchNote})`;
  const producers = await Promise.all(Array.from({ length: opt.batchConns }, () => adapter.producer(queue)));
  const rss0 = serverRss();
  const cpu = cpuWindow();
  const r = await closedLoop(producers, 1, opt.batch, ledger, lat, opt.pushS);
  push.seconds = r.seconds; push.jobs = ledger.pushed; push.jobs_per_s = push.jobs / r.seconds;
  cpu(push.jobs, push);
  const rss1 = serverRss();
  if (rss0 !== null && rss1 !== null && push.jobs) {
    push.server_rss_bytes_per_million_waiting = (rss1 - rss0) * 1e6 / push.jobs;
  }
  push.push_latency = summarize(lat);
  await Promise.all(producers.map((p) => p.close()));

  const proc = base('process', 'workers', '-');
  proc.params = adapter.workerNote;
  const pcpu = cpuWindow();
  const start = nowUs();
  await drain(queue, ledger, proc);
  proc.jobs = ledger.processed;
  proc.seconds = Math.max(ledger.lastDeliveryUs - start, 1) / 1e6;
  proc.jobs_per_s = proc.jobs / proc.seconds;
  pcpu(proc.jobs, proc);
  await adapter.cleanup(queue);
  push.errors += ledger.pushErrors; push.first_error = ledger.firstError;
  push.verify = ledger.verify();
  ledger.pushErrors = 0;
  if (opt.scenarios.includes('push')) { rows.push(push); print(push); }
  if (opt.scenarios.includes('process')) finish(proc, ledger);
}

async function steady() {
  const queue = `rqb-${process.pid}-${++rowId}`;
  const ledger = new Ledger(opt.jobsMax);
  const lat = [];
  const row = base('steady', 'batch+workers', 'closed-loop push->delivery (e2e)');
  row.params = `${opt.batchConns} batch producers, workers as in process`;
  const producers = await Promise.all(Array.from({ length: opt.batchConns }, () => adapter.producer(queue)));
  const cpu = cpuWindow();
  const workers = await adapter.startWorkers(queue, opt.workerConns, (b) => ledger.onJob(b));
  const r = await closedLoop(producers, 1, opt.batch, ledger, lat, opt.steadyS);
  row.seconds = r.seconds;
  row.push_per_s = ledger.pushed / r.seconds;
  row.process_per_s = ledger.processed / r.seconds;
  const deadline = nowUs() + opt.drainS * 1e6;
  while (ledger.processed < ledger.pushed && nowUs() < deadline) await sleep(2);
  try { await workers.stop(); } catch (e) { row.errors++; row.first_error ||= String(e); }
  row.jobs = ledger.processed; row.jobs_per_s = row.process_per_s;
  cpu(row.jobs, row);
  row.push_latency = summarize(lat);
  row.e2e_latency = summarize(ledger.e2e);
  await Promise.all(producers.map((p) => p.close()));
  await adapter.cleanup(queue);
  finish(row, ledger);
}

// Open loop: job i is due at start + i/rate; a 1 ms timer sends every due job.
async function latency() {
  const queue = `rqb-${process.pid}-${++rowId}`;
  const total = Math.min(opt.jobsMax, Math.round(opt.rate * opt.latencyS));
  const ledger = new Ledger(total);
  const row = base('latency', 'single', 'open-loop, from the INTENDED send time (CO-corrected)');
  row.params = `${opt.rate} jobs/s over 2 conns, workers subscribed`;
  const producers = await Promise.all([adapter.producer(queue), adapter.producer(queue)]);
  const cpu = cpuWindow();
  const workers = await adapter.startWorkers(queue, opt.workerConns, (b) => ledger.onJob(b));
  const pushLat = []; const lag = [];
  let answered = 0; let i = 0;
  const start = nowUs() + 2000;
  await new Promise((resolve) => {
    const tick = () => {
      const now = nowUs();
      while (i < total && start + i * 1e6 / opt.rate <= now && i - answered < 100000) {
        const due = start + i * 1e6 / opt.rate; const seq = i++;
        lag.push(nowUs() - due);
        producers[seq % 2].push(makeBody(seq, due)).then(() => {
          pushLat.push(nowUs() - due); ledger.onPushed(seq, null); answered++;
        }, (e) => { pushLat.push(nowUs() - due); ledger.onPushed(seq, e); answered++; });
      }
      if (i < total) setTimeout(tick, Math.max(0, Math.min(1, (start + i * 1e6 / opt.rate - nowUs()) / 1000)));
      else resolve();
    };
    setTimeout(tick, 2);
  });
  const soft = nowUs() + 30e6;
  while (answered < i && nowUs() < soft) await sleep(1);
  row.seconds = (nowUs() - start) / 1e6;
  const deadline = nowUs() + opt.drainS * 1e6;
  while (ledger.processed < ledger.pushed && nowUs() < deadline) await sleep(2);
  try { await workers.stop(); } catch (e) { row.errors++; row.first_error ||= String(e); }
  row.jobs = ledger.processed; row.jobs_per_s = ledger.pushed / row.seconds;
  cpu(row.jobs, row);
  row.push_latency = summarize(pushLat);
  row.e2e_latency = summarize(ledger.e2e);
  row.send_lag = summarize(lag);
  await Promise.all(producers.map((p) => p.close()));
  await adapter.cleanup(queue);
  finish(row, ledger);
}

// ------------------------------------------------------------------ output

const fmt = (us) => (us === undefined || us === null ? '-' : us < 1000 ? `${us.toFixed(0)}us`
  : us < 1e6 ? `${(us / 1000).toFixed(2)}ms` : `${(us / 1e6).toFixed(2)}s`);
function print(r) {
  const l = r.push_latency;
  const line = (which, l, first) => console.log([
    (first ? r.scenario : '').padEnd(8), (first ? r.api : '').padEnd(13),
    String(first ? r.jobs : '').padStart(9), (first ? r.seconds.toFixed(2) : '').padStart(7),
    (first ? r.jobs_per_s.toFixed(0) : '').padStart(10), which.padEnd(4),
    ...['p50_us', 'p90_us', 'p99_us', 'p999_us', 'max_us'].map((k) => fmt(l && l[k]).padStart(9)),
    String(r.errors).padStart(6), (r.verify && r.verify.ok ? 'ok' : 'FAIL').padEnd(8),
    (r.server_cpu_s_per_million === null ? '-' : r.server_cpu_s_per_million.toFixed(2)).padStart(9),
  ].join(' '));
  line(l ? 'push' : '-', l, true);
  if (r.e2e_latency && l) line('e2e', r.e2e_latency, false);
  if (r.send_lag) console.log(`${''.padEnd(8)}   generator send lag p50 ${fmt(r.send_lag.p50_us)} p99 ${fmt(r.send_lag.p99_us)} (included above)`);
  if (r.push_per_s !== undefined) console.log(`${''.padEnd(8)}   pushed ${r.push_per_s.toFixed(0)} jobs/s and processed ${r.process_per_s.toFixed(0)} jobs/s at once`);
  if (r.server_rss_bytes_per_million_waiting !== null) console.log(`${''.padEnd(8)}   server RSS ${(r.server_rss_bytes_per_million_waiting / 1048576).toFixed(0)} MiB per million waiting jobs`);
  if (r.errors) console.log(`${''.padEnd(8)}   first error: ${r.first_error}`);
  if (r.verify && !r.verify.ok) console.log(`${''.padEnd(8)}   VERIFY FAILED: ${JSON.stringify(r.verify)}`);
}

async function main() {
  // A hard bound on the whole run: every phase above is bounded, this is the backstop.
  const budgetS = 4 * (opt.pushS * 3 + opt.steadyS + opt.latencyS) + 4 * opt.drainS + 120;
  setTimeout(() => { console.error(`harness: run exceeded ${budgetS} s; exiting`); process.exit(3); }, budgetS * 1000).unref();
  await adapter.open();
  console.log(`peer ${opt.label} (${adapter.client}); acknowledged means: ${opt.durability}`);
  console.log('closed-loop latencies are service times; open-loop latencies are from the INTENDED send time (coordinated-omission corrected)\n');
  console.log(['scenario'.padEnd(8), 'api'.padEnd(13), 'jobs'.padStart(9), 'secs'.padStart(7), 'jobs/s'.padStart(10), 'lat '.padEnd(4),
    ...['p50', 'p90', 'p99', 'p99.9', 'max'].map((s) => s.padStart(9)), 'errors'.padStart(6), 'verified', 'srv cpu/M'.padStart(9)].join(' '));
  const has = (s) => opt.scenarios.includes(s);
  if (has('push')) { await pushRow('single'); await pushRow('pipelined'); }
  if (has('push') || has('process')) await batchAndProcess();
  if (has('steady')) await steady();
  if (has('latency')) await latency();
  await adapter.close();
  if (opt.json) {
    fs.writeFileSync(opt.json, JSON.stringify({ tool: 'peers/harness.js', system: opt.label,
      peer: opt.peer, client: adapter.client, server_version: opt.serverVersion,
      durability: opt.durability, payload: opt.payload,
      latency_note: 'closed-loop rows: service time from the actual send; open-loop rows: from the intended send time (coordinated omission corrected); Node timers add about 1 ms of send lag, reported as send_lag',
      rows }, null, 1));
  }
  const ok = rows.every((r) => r.verify && r.verify.ok && r.errors === 0);
  console.log(ok ? '\nall rows verified' : '\nSOME ROWS FAILED');
  process.exit(ok ? 0 : 1);
}

main().catch((e) => { console.error('harness:', e); process.exit(2); });
