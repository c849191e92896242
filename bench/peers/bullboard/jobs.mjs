// N BullMQ jobs run by one Worker of concurrency N, each calling job.updateProgress() every
// --every seconds for --seconds: the same load as underway's side of bench/dashboard.py.
//
// Progress is a number (Bull Board draws numbers as "<n>%"): the percentage of the run, with
// steps on a clock shared by all jobs (step k is written at --t0 + k * --every seconds), so that
// a shown value tells when it was written (how stale the page is).
//
//   node jobs.mjs --queue NAME --prefix PREFIX --jobs 1000 --every 1 --seconds 70 --t0 <epoch s>
//   node jobs.mjs --clean --prefix PREFIX      # delete every Redis key under PREFIX:
// Prints "active <n>" once a second. On SIGTERM it closes the worker and deletes the keys.
import { Queue, Worker } from 'bullmq';
import { connection, options } from './common.mjs';

const opts = options({
  queue: '',
  prefix: '',
  redis: '127.0.0.1:6379',
  jobs: 1000,
  every: 1,
  seconds: 70,
  t0: 0,
  clean: false,
});
if (!opts.prefix || opts.prefix.length < 8) throw new Error('--prefix (8 characters or more) is required');

async function clean() {
  // Only the keys of this run's prefix: the Redis may hold other things.
  const redis = connection(opts.redis);
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${opts.prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  await redis.quit();
  return deleted;
}

if (opts.clean) {
  console.log(`deleted ${await clean()} keys under ${opts.prefix}:`);
  process.exit(0);
}
if (!opts.queue) throw new Error('--queue is required');

const everyMs = opts.every * 1000;
const t0 = (opts.t0 || Date.now() / 1000) * 1000;
const steps = Math.ceil(opts.seconds / opts.every);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
let active = 0;

const queue = new Queue(opts.queue, { connection: connection(opts.redis), prefix: opts.prefix });
const worker = new Worker(
  opts.queue,
  async (job) => {
    active += 1;
    try {
      const end = Date.now() + opts.seconds * 1000;
      while (Date.now() < end) {
        const k = Math.floor((Date.now() - t0) / everyMs);
        await job.updateProgress(Math.round((k / steps) * 10000) / 100);
        await sleep(t0 + (k + 1) * everyMs - Date.now());
      }
      return steps;
    } finally {
      active -= 1;
    }
  },
  { connection: connection(opts.redis), prefix: opts.prefix, concurrency: opts.jobs },
);
worker.on('error', (err) => console.error(`worker error: ${err}`));

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  clearInterval(ticker);
  await worker.close(true);
  await queue.close();
  console.log(`deleted ${await clean()} keys under ${opts.prefix}:`);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

const probe = connection(opts.redis);
const info = await probe.info('server');
await probe.quit();
console.log(`redis ${(info.match(/redis_version:(\S+)/) || [])[1]}`);
await queue.addBulk(
  Array.from({ length: opts.jobs }, (_, n) => ({
    name: 'progress_clock',
    data: { n, steps, every: opts.every },
    opts: { removeOnComplete: true, removeOnFail: true },
  })),
);
console.log(`added ${opts.jobs} jobs`);
const ticker = setInterval(() => console.log(`active ${active}`), 1000);
