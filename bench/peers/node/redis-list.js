// Bare Redis list baseline: LPUSH to push (a batch is one LPUSH of 100
// values), BRPOP to take (64 pipelined per connection). No job semantics at
// all: no ids, no leases, no acks, no retries; a crashed worker loses its job.
'use strict';
const IORedis = require('ioredis');
const version = require('./version');

exports.create = (opt) => {
  const [host, port] = opt.url.split(':');
  const conn = () => new IORedis({ host, port: Number(port), maxRetriesPerRequest: null });
  const inFlight = 64;
  return {
    client: `ioredis ${version('ioredis')}`,
    batchNote: 'one LPUSH of 100 values',
    workerNote: `${opt.workerConns} conns x ${inFlight} pipelined BRPOP`,
    async open() {},
    async producer(queue) {
      const c = conn();
      return {
        push: (b) => c.lpush(queue, b),
        pushBatch: (bs) => c.lpush(queue, ...bs),
        close: async () => { await c.quit(); },
      };
    },
    async startWorkers(queue, n, onBody) {
      let stopped = false;
      const conns = []; const loops = [];
      for (let i = 0; i < n; i++) {
        const c = conn(); conns.push(c);
        for (let k = 0; k < inFlight; k++) {
          loops.push((async () => {
            while (!stopped) {
              const r = await c.brpop(queue, 1);
              if (r) onBody(r[1]);
            }
          })().catch((e) => { if (!stopped) throw e; }));
        }
      }
      return {
        // Blocked BRPOPs would each wait out their timeout in turn: disconnect instead.
        stop: async () => { stopped = true; conns.forEach((c) => c.disconnect()); await Promise.all(loops); },
      };
    },
    async cleanup(queue) { const c = conn(); await c.del(queue); await c.quit(); },
    async close() {},
  };
};
