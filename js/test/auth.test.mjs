// Stream tokens: refreshed once on 401 and on expiry, shared by every stream using the same
// function, against a server with authentication on.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createClient, watchJob } from "../underway.js";
import { recorder, startServer, waitFor } from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;
/** @type {ReturnType<typeof createClient>} */
let user;
const TRANSPORTS = /** @type {const} */ (["sse", "ws", "poll"]);

before(async () => {
  server = await startServer({ args: ["--auth", "on"] });
  user = createClient({ baseUrl: server.baseUrl, token: server.key("ada", "user") });
});
after(() => server?.stop());

/**
 * A token function that makes a stream token for `scope` on each call, after `bad` refused ones.
 * @param {{job?: string, ttl?: number}} scope @param {number} [bad]
 */
function tokenFunction(scope, bad = 0) {
  /** @type {string[]} */
  const made = [];
  const fn = async () => {
    if (made.length < bad) {
      made.push(`uwt.not-a-token-${made.length}.x`);
      return made.at(-1);
    }
    const { token } = await user.streamToken(scope);
    made.push(token);
    return token;
  };
  return { fn, made };
}

/** Tokens a watch sent: in `Authorization` (fetch) or `?token=` (WebSocket). */
function spying() {
  /** @type {Set<string>} */
  const used = new Set();
  /** @type {number[]} the statuses of the stream's answers */
  const statuses = [];
  /** @type {typeof fetch} */
  const spy = async (input, init) => {
    const header = new Headers(init?.headers).get("authorization");
    if (header) used.add(header.replace(/^Bearer /, ""));
    const response = await fetch(input, init);
    statuses.push(response.status);
    return response;
  };
  const Socket = class extends WebSocket {
    /** @param {string} url */
    constructor(url) {
      super(url);
      const token = new URL(url).searchParams.get("token");
      if (token) used.add(token);
    }
  };
  return { used, statuses, fetch: spy, WebSocket: Socket };
}

/** @param {string} id @param {() => any} token @param {string} transport */
function watching(id, token, transport) {
  const { seen, callbacks } = recorder();
  const spy = spying();
  const watch = watchJob(id, {
    baseUrl: server.baseUrl,
    token,
    transport: /** @type {any} */ (transport),
    fetch: spy.fetch,
    WebSocket: spy.WebSocket,
    retryDelay: 50,
    ...callbacks,
  });
  return { seen, used: spy.used, statuses: spy.statuses, watch };
}

describe("stream tokens", () => {
  test("a refused token is refreshed once, one call shared by every stream", async () => {
    const job = await user.submit("steps", { count: 3, interval: 0.02 });
    const tokens = tokenFunction({ job: job.id, ttl: 60 }, 1);
    const watches = TRANSPORTS.map((transport) => watching(job.id, tokens.fn, transport));
    try {
      await waitFor(() => watches.every(({ seen }) => seen.ends.length > 0), { what: "every end" });
    } finally {
      for (const { watch } of watches) watch.close();
    }
    assert.equal(tokens.made.length, 2, `the token function was called ${tokens.made.length} times`);
    const stored = await server.events(job.id, tokens.made[1]);
    for (const { seen, used } of watches) {
      assert.deepEqual(seen.events, stored);
      assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
      assert.deepEqual([...used].sort(), [...tokens.made].sort());
      assert.deepEqual(seen.errors, []); // a refresh that worked is not an error
    }
  });

  test("an expired token: each transport gets a new one and goes on from where it was", async () => {
    const release = "release-each";
    const job = await user.submit("hold", { release: server.path(release), interval: 0.05 });
    // a token function each: nothing is shared
    const watches = TRANSPORTS.map((transport) =>
      watching(job.id, tokenFunction({ job: job.id, ttl: 1 }).fn, transport),
    );
    try {
      await waitFor(() => watches.every(({ used }) => used.size >= 2), { timeout: 15000, what: "a refresh" });
      server.release(release);
      await waitFor(() => watches.every(({ seen }) => seen.ends.length > 0), { what: "every end" });
    } finally {
      for (const { watch } of watches) watch.close();
    }
    const stored = await server.events(job.id, [...watches[0].used].at(-1));
    for (const { seen } of watches) {
      assert.deepEqual(seen.events, stored);
      assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
      assert.deepEqual(seen.errors, []);
    }
    // the SSE stream said `event: expired` and was opened again with a new token: never a 401
    assert.deepEqual(new Set(watches[0].statuses), new Set([200]));
  });

  test("an expired token: the streams get a new one, shared, and go on from where they were", async () => {
    const release = "release-expiry";
    const job = await user.submit("hold", { release: server.path(release), interval: 0.05 });
    const tokens = tokenFunction({ job: job.id, ttl: 1 });
    const started = Date.now();
    const watches = TRANSPORTS.map((transport) => watching(job.id, tokens.fn, transport));
    try {
      // every watch has gone on with a third token: each lived through two expiries
      await waitFor(() => watches.every(({ used }) => used.size >= 3), {
        timeout: 15000,
        what: "two refreshes",
      });
      server.release(release);
      await waitFor(() => watches.every(({ seen }) => seen.ends.length > 0), { what: "every end" });
    } finally {
      for (const { watch } of watches) watch.close();
    }
    const rounds = Math.ceil((Date.now() - started) / 1000);
    assert.ok(tokens.made.length <= rounds + 1, `${tokens.made.length} tokens in ${rounds} s: not shared`);
    const stored = await server.events(job.id, tokens.made.at(-1));
    for (const { seen } of watches) {
      assert.deepEqual(seen.events, stored);
      assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
    }
  });

  test("a fixed token that is refused stops the watch with one error, and no end", async () => {
    const job = await user.submit("add", { a: 1 });
    for (const transport of TRANSPORTS) {
      const { seen, statuses, watch } = watching(job.id, /** @type {any} */ ("uwt.forged.token"), transport);
      await waitFor(() => seen.errors.length > 0, { what: `the error (${transport})` });
      watch.close();
      assert.equal(seen.errors.length, 1, transport);
      const [error] = seen.errors;
      assert.equal(error.code, "unauthenticated", transport);
      assert.equal(error.status, 401, transport);
      assert.equal(error.fatal, true, transport);
      assert.deepEqual(seen.ends, [], transport);
      assert.ok(statuses.length <= 1, `${transport} asked ${statuses.length} times`);
    }
  });

  test("a token function whose tokens keep being refused meets the backoff, not a loop", async () => {
    const job = await user.submit("add", { a: 1 });
    for (const transport of TRANSPORTS) {
      /** @type {number[]} */
      const calls = [];
      const spent = async () => (calls.push(Date.now()), "uwt.spent.token");
      const { seen, watch } = watching(job.id, spent, transport);
      try {
        await waitFor(() => calls.length >= 6, { what: `six calls (${transport})` });
      } finally {
        watch.close();
      }
      // the first token, a new one at once, then one per backoff: at least 25 + 50 + 100 ms
      // (retryDelay 50, halved at most by the jitter); a loop would make six calls in a few ms
      assert.ok(calls[5] - calls[0] >= 170, `${transport}: six calls in ${calls[5] - calls[0]} ms`);
      assert.ok(seen.errors.length >= 2, transport);
      assert.ok(
        seen.errors.every((error) => error.code === "unauthenticated" && !error.fatal),
        transport,
      );
      assert.deepEqual(seen.ends, []);
    }
  });

  test("the REST helpers refresh a refused token once too", async () => {
    const job = await user.submit("add", { a: 4, b: 5 });
    const tokens = tokenFunction({ job: job.id }, 1);
    const reader = createClient({ baseUrl: server.baseUrl, token: tokens.fn });
    const read = await reader.get(job.id);
    assert.equal(read.id, job.id);
    assert.equal(tokens.made.length, 2);
    await assert.rejects(reader.submit("add", { a: 1 }), {
      name: "UnderwayError",
      code: "forbidden",
      status: 403,
    });
  });
});
