// BullMQ adapter: Queue.add / Queue.addBulk to push, Worker (concurrency 50) to
// process. Completed jobs are kept like ringq keeps them (the last 1000 per
// queue), not forever (BullMQ's default), so memory stays comparable.
'use strict';
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const version = require('./version');

exports.create = (opt) => {
  const [host, port] = opt.url.split(':');
  const conn = () => new IORedis({ host, port: Number(port), maxRetriesPerRequest: null });
  const jobOpts = { removeOnComplete: 1000, removeOnFail: 1000 };
  const concurrency = 50;
  return {
    client: `bullmq ${version('bullmq')}, ioredis ${version('ioredis')}`,
    batchNote: 'Queue.addBulk',
    workerNote: `${opt.workerConns} Workers x concurrency ${concurrency}`,
    async open() {},
    async producer(queue) {
      const c = conn();
      const q = new Queue(queue, { connection: c });
      await q.waitUntilReady();
      return {
        push: (b) => q.add('j', b, jobOpts),
        pushBatch: (bs) => q.addBulk(bs.map((b) => ({ name: 'j', data: b, opts: jobOpts }))),
        close: async () => { await q.close(); c.disconnect(); },
      };
    },
    async startWorkers(queue, n, onBody) {
      const conns = []; const workers = [];
      for (let i = 0; i < n; i++) {
        const c = conn(); conns.push(c);
        workers.push(new Worker(queue, async (job) => { onBody(job.data); },
          { connection: c, concurrency }));
      }
      await Promise.all(workers.map((w) => w.waitUntilReady()));
      return {
        stop: async () => {
          await Promise.all(workers.map((w) => w.close()));
          conns.forEach((c) => c.disconnect());
        },
      };
    },
    async cleanup(queue) {
      const c = conn();
      const q = new Queue(queue, { connection: c });
      await q.obliterate({ force: true });
      await q.close(); c.disconnect();
    },
    async close() {},
  };
};
