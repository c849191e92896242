// Bull Board (express adapter, its defaults) for one BullMQ queue, at http://127.0.0.1:<port>/ui.
//   node server.mjs --port 3000 --queue NAME --prefix PREFIX [--redis 127.0.0.1:6379]
import express from 'express';
import { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { connection, options } from './common.mjs';

const opts = options({ port: 0, queue: '', prefix: '', redis: '127.0.0.1:6379' });
if (!opts.port || !opts.queue || !opts.prefix) throw new Error('--port, --queue and --prefix are required');

const queue = new Queue(opts.queue, { connection: connection(opts.redis), prefix: opts.prefix });
const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath('/ui');
createBullBoard({ queues: [new BullMQAdapter(queue)], serverAdapter });

const app = express();
app.use('/ui', serverAdapter.getRouter());
const server = app.listen(opts.port, '127.0.0.1', () => console.log(`listening on ${opts.port}`));

const stop = async () => {
  server.close();
  await queue.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
