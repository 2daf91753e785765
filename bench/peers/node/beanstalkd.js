// beanstalkd adapter: a small pipelined client of its text protocol
// (put / reserve-with-timeout / delete), replies matched in order. A "batch"
// is 100 puts written at once: the protocol has no batch command.
'use strict';
const net = require('net');

class Conn {
  constructor(host, port) {
    this.pending = []; this.out = []; this.buf = Buffer.alloc(0); this.dead = null;
    this.sock = net.connect(port, host);
    this.sock.setNoDelay(true);
    this.sock.on('data', (d) => this.onData(d));
    this.sock.on('error', (e) => this.fail(e));
    this.sock.on('close', () => this.fail(new Error('beanstalkd connection closed')));
  }
  ready() {
    return new Promise((res, rej) => { this.sock.once('connect', res); this.sock.once('error', rej); });
  }
  send(line, body) {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.out.push(line + '\r\n');
      if (body !== undefined) this.out.push(body + '\r\n');
      if (this.out.length <= 2) process.nextTick(() => this.flush());
    });
  }
  flush() {
    if (!this.out.length || this.dead) return;
    this.sock.write(this.out.join(''));
    this.out = [];
  }
  onData(d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let off = 0;
    for (;;) {
      const eol = this.buf.indexOf('\r\n', off);
      if (eol < 0) break;
      const line = this.buf.toString('latin1', off, eol);
      let reply = line; let next = eol + 2;
      if (line.startsWith('RESERVED ')) {
        const [, id, bytes] = line.split(' ');
        if (this.buf.length < next + Number(bytes) + 2) break;  // body not all here yet
        reply = { id, body: this.buf.toString('latin1', next, next + Number(bytes)) };
        next += Number(bytes) + 2;
      }
      off = next;
      const p = this.pending.shift();
      if (p) p.resolve(reply);
    }
    this.buf = off >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }
  fail(e) {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.splice(0)) p.reject(e);
  }
  close() { this.dead = this.dead || new Error('closed'); this.sock.destroy(); }
}

const expect = (want) => (r) => {
  if (typeof r !== 'string' || !r.startsWith(want)) throw new Error(`beanstalkd: ${JSON.stringify(r)}`);
  return r;
};

exports.create = (opt) => {
  const [host, port] = opt.url.split(':');
  const open = async () => { const c = new Conn(host, Number(port)); await c.ready(); return c; };
  const inFlight = 64;
  return {
    client: 'bench/peers/node/beanstalkd.js (pipelined text protocol)',
    batchNote: '100 puts in one write (no batch command)',
    workerNote: `${opt.workerConns} conns x ${inFlight} pipelined reserve-with-timeout 0 + delete`,
    async open() {},
    async producer(queue) {
      const c = await open();
      await c.send(`use ${queue}`).then(expect('USING'));
      const push = (b) => c.send(`put 0 0 120 ${Buffer.byteLength(b)}`, b).then(expect('INSERTED'));
      return { push, pushBatch: (bs) => Promise.all(bs.map(push)), close: async () => c.close() };
    },
    async startWorkers(queue, n, onBody) {
      let stopped = false;
      const conns = []; const loops = [];
      for (let i = 0; i < n; i++) {
        const c = await open(); conns.push(c);
        await c.send(`watch ${queue}`).then(expect('WATCHING'));
        await c.send('ignore default').then(expect('WATCHING'));
        for (let k = 0; k < inFlight; k++) {
          loops.push((async () => {
            const deletes = [];
            while (!stopped) {
              const r = await c.send('reserve-with-timeout 0');
              if (r === 'TIMED_OUT') { await new Promise((res) => setTimeout(res, 1)); continue; }
              if (typeof r === 'string') throw new Error(`beanstalkd: ${r}`);
              onBody(r.body);
              deletes.push(c.send(`delete ${r.id}`).then(expect('DELETED')));
              if (deletes.length >= 256) await Promise.all(deletes.splice(0));
            }
            await Promise.all(deletes);
          })());
        }
      }
      return { stop: async () => { stopped = true; try { await Promise.all(loops); } finally { conns.forEach((c) => c.close()); } } };
    },
    async cleanup() {},  // an empty tube that nobody uses disappears by itself
    async close() {},
  };
};
