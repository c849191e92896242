import IORedis from 'ioredis';

// Command-line options shared by server.mjs and jobs.mjs: --name value pairs.
export function options(defaults) {
  const out = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in defaults)) throw new Error(`unknown option ${argv[i]}`);
    if (typeof defaults[key] === 'boolean') out[key] = true;
    else out[key] = typeof defaults[key] === 'number' ? Number(argv[(i += 1)]) : argv[(i += 1)];
  }
  return out;
}

// A new ioredis client (BullMQ's ESM build takes a client, not connection options).
export function connection(redis) {
  const [host, port] = redis.split(':');
  return new IORedis({ host, port: Number(port || 6379), maxRetriesPerRequest: null });
}
