// NATS JetStream adapter: one work-queue stream with file storage per row,
// js.publish (waits for the stream's PubAck) to push, a durable pull consumer
// with explicit acks (consume(), ack per message) to process. A "batch" is
// 100 publishes in flight at once: JetStream has no batch publish.
'use strict';
const { connect, RetentionPolicy, StorageType, AckPolicy, StringCodec } = require('nats');
const version = require('./version');

exports.create = (opt) => {
  const sc = StringCodec();
  let nc; let jsm;
  const streams = new Map();
  const stream = (queue) => queue.replace(/[^A-Za-z0-9_-]/g, '_');
  const subject = (queue) => `rqb.${stream(queue)}`;
  const ensure = (queue) => {
    if (!streams.has(queue)) {
      streams.set(queue, (async () => {
        await jsm.streams.add({ name: stream(queue), subjects: [subject(queue)],
          retention: RetentionPolicy.Workqueue, storage: StorageType.File });
        await jsm.consumers.add(stream(queue), { durable_name: 'w',
          ack_policy: AckPolicy.Explicit, max_ack_pending: 8000 });
      })());
    }
    return streams.get(queue);
  };
  return {
    client: `nats.js ${version('nats')}`,
    batchNote: '100 js.publish in flight (no batch publish)',
    workerNote: `${opt.workerConns} conns, pull consumer consume(max_messages 1000), ack per message`,
    async open() {
      nc = await connect({ servers: opt.url });
      jsm = await nc.jetstreamManager();
    },
    async producer(queue) {
      await ensure(queue);
      const c = await connect({ servers: opt.url });
      const js = c.jetstream();
      const subj = subject(queue);
      const push = (b) => js.publish(subj, sc.encode(b));
      return { push, pushBatch: (bs) => Promise.all(bs.map(push)), close: () => c.close() };
    },
    async startWorkers(queue, n, onBody) {
      await ensure(queue);
      const conns = []; const iters = []; const loops = [];
      for (let i = 0; i < n; i++) {
        const c = await connect({ servers: opt.url }); conns.push(c);
        const consumer = await c.jetstream().consumers.get(stream(queue), 'w');
        const it = await consumer.consume({ max_messages: 1000 });
        iters.push(it);
        loops.push((async () => { for await (const m of it) { onBody(sc.decode(m.data)); m.ack(); } })());
      }
      return {
        stop: async () => {
          // Let the last acks leave before the connections go.
          await Promise.all(conns.map((c) => c.flush()));
          iters.forEach((it) => it.stop());
          await Promise.all(loops);
          await Promise.all(conns.map((c) => c.close()));
        },
      };
    },
    async cleanup(queue) { await jsm.streams.delete(stream(queue)); streams.delete(queue); },
    async close() { await nc.close(); },
  };
};
