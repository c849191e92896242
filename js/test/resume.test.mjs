// A server killed (SIGKILL), then stopped (SIGTERM, its streams end cleanly), each time started
// again on the same port and store: every watch resumes where it stopped (asking for what comes
// after the last seq it has), misses nothing, repeats nothing, and reports the end once, after
// the job's end.
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventSource } from "eventsource";

import { createClient, watchJob } from "../underway.js";
import { countingFetch, recorder, startServer, stores, waitFor } from "./helpers/server.mjs";

/** @param {string|undefined} url */
const serverOn = (url) =>
  // a short lease: the attempt the kill interrupted runs again soon after the restart
  startServer({ url, args: ["--lease-timeout", "1", "--sweep-interval", "0.2", "--shutdown-grace", "0.2"] });

const WATCHES = {
  sse: { transport: "sse" },
  ws: { transport: "ws" },
  poll: { transport: "poll" },
  eventsource: { transport: "sse", sseClient: "eventsource", EventSource },
};

/** A WebSocket that keeps what it sends. */
class SpyingSocket extends WebSocket {
  /** @type {any[]} */
  static sent = [];
  static made = 0;
  /** @param {string} url */
  constructor(url) {
    super(url);
    SpyingSocket.made += 1;
  }
  /** @param {string} data */
  send(data) {
    SpyingSocket.sent.push(JSON.parse(data));
    super.send(data);
  }
}

/** @param {any} event */
const attempt = (event) => (event.type === "log" ? event.data.fields?.attempt : undefined);

for (const [store, url] of stores()) {
  test(`every transport resumes after the server was killed, and after it was stopped (${store})`, async () => {
    const server = await serverOn(url);
    try {
      await resumes(server);
    } finally {
      await server.stop();
    }
  });
}

/** @param {import("./helpers/server.mjs").UnderwayServer} server */
async function resumes(server) {
  SpyingSocket.sent = [];
  const api = createClient({ baseUrl: server.baseUrl });
  const job = await api.submit(
    "hold",
    { release: server.path("release"), interval: 0.05 },
    { max_attempts: 5 },
  );
  const watches = Object.entries(WATCHES).map(([name, options]) => {
    const { seen, callbacks } = recorder();
    const counted = countingFetch(`/jobs/${job.id}/`);
    const handle = watchJob(job.id, {
      baseUrl: server.baseUrl,
      retryDelay: 100,
      maxRetryDelay: 400,
      fetch: counted.fetch,
      WebSocket: SpyingSocket,
      .../** @type {any} */ (options),
      ...callbacks,
    });
    return { name, seen, handle, asked: counted.calls };
  });
  /** @param {string} what @param {(seen: any) => boolean} condition @param {number} [timeout] */
  const everyWatch = (what, condition, timeout = 20000) =>
    waitFor(() => watches.every(({ seen }) => condition(seen)), { timeout, what: `${what} in every watch` });
  try {
    await everyWatch("events", (seen) => seen.events.length >= 5);
    for (const [stop, next] of /** @type {const} */ ([
      ["kill", 2],
      ["terminate", 3],
    ])) {
      await server[stop]();
      await everyWatch("a disconnect", (seen) => seen.connections.at(-1) === false);
      // the server stays away until each transport was refused twice
      const sockets = SpyingSocket.made;
      const calls = watches.map(({ asked }) => asked.length);
      await waitFor(
        () =>
          SpyingSocket.made >= sockets + 2 &&
          watches.every(
            ({ name, asked }, i) => name === "ws" || name === "eventsource" || asked.length >= calls[i] + 2,
          ),
        { what: "refused attempts" },
      );
      await server.start();
      await everyWatch(`attempt ${next}`, (seen) =>
        seen.events.some((/** @type {any} */ e) => attempt(e) === next),
      );
      for (const { name, seen } of watches) {
        assert.deepEqual(seen.ends, [], `${name} reported an end before the job ended`);
        assert.equal(seen.connections.at(-1), true, name);
      }
    }
    server.release("release");
    await everyWatch("the end", (seen) => seen.ends.length > 0, 15000);
  } finally {
    for (const { handle } of watches) handle.close();
  }
  const stored = await server.events(job.id);
  const reasons = stored.map((event) => event.data.reason).filter(Boolean);
  assert.deepEqual(reasons, ["lease_expired", "worker_shutdown"]);
  for (const { name, seen } of watches) {
    assert.deepEqual(
      seen.events.map((/** @type {any} */ event) => event.seq),
      stored.map((event) => event.seq),
      name,
    );
    assert.deepEqual(seen.events, stored, name);
    assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }], name);
    assert.equal(seen.job.status, "succeeded", name);
    assert.equal(seen.job.attempt, 3, name);
    assert.deepEqual(seen.errors, [], name);
  }
  // each asked to resume after what it had: ?after= on streams and polls, after on the socket
  /** @param {string} url */
  const resumedAt = (url) => Number(new URL(url).searchParams.get("after") ?? 0);
  for (const name of ["sse", "poll"]) {
    const asked = /** @type {any} */ (watches.find((watch) => watch.name === name)).asked;
    assert.ok(asked.filter((/** @type {any} */ call) => resumedAt(call.url) >= 5).length >= 2, name);
  }
  const subscribed = SpyingSocket.sent.filter((message) => message.op === "subscribe");
  assert.equal(subscribed[0].after, 0);
  assert.ok(subscribed.filter((message) => message.after >= 5).length >= 2, JSON.stringify(subscribed));
}
