// Failing connections: exponential backoff with jitter, Retry-After on 429, and long polling when
// a proxy holds the stream back.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createClient, watchJob } from "../underway.js";
import {
  countingFetch,
  freePort,
  misbehavingProxy,
  recorder,
  startServer,
  waitFor,
} from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;
/** @type {ReturnType<typeof createClient>} */
let api;

before(async () => {
  server = await startServer();
  api = createClient({ baseUrl: server.baseUrl });
});
after(() => server?.stop());

describe("backoff", () => {
  test("a server that cannot be reached is retried later and later, with jitter, up to the cap", async () => {
    const port = await freePort();
    const counted = countingFetch();
    const { seen, callbacks } = recorder();
    const watch = watchJob("j", {
      baseUrl: `http://127.0.0.1:${port}/api`,
      fetch: counted.fetch,
      retryDelay: 40,
      maxRetryDelay: 320,
      ...callbacks,
    });
    try {
      await waitFor(() => counted.calls.length >= 9, { what: "nine attempts" });
    } finally {
      watch.close();
    }
    const gaps = counted.calls.slice(1).map((call, i) => call.at - counted.calls[i].at);
    const ratios = gaps.map((gap, i) => {
      const ceiling = Math.min(320, 40 * 2 ** i);
      assert.ok(
        gap >= ceiling / 2 - 2 && gap <= ceiling + 150,
        `attempt ${i + 2} came ${gap} ms after, ceiling ${ceiling}`,
      );
      return gap / ceiling;
    });
    assert.ok(Math.max(...ratios) - Math.min(...ratios) > 0.02, `no jitter: ${ratios}`);
    assert.deepEqual(seen.ends, []);
    assert.deepEqual(seen.errors, []); // a server that is down is no error, just not connected
    assert.ok(!seen.connections.includes(true));
  });

  test("429: the next attempt waits for Retry-After, then connects", async () => {
    const limited = await startServer({ args: ["--auth", "on", "--max-streams-per-user", "1"] });
    try {
      const token = limited.key("bo", "user");
      const user = createClient({ baseUrl: limited.baseUrl, token });
      const release = limited.path("release");
      const [first, second] = await Promise.all(
        [1, 2].map(() => user.submit("hold", { release, interval: 0.2 })),
      );
      const one = recorder();
      const holder = watchJob(first.id, { baseUrl: limited.baseUrl, token, ...one.callbacks });
      await waitFor(() => one.seen.connections.at(-1) === true, { what: "the first stream" });
      const counted = countingFetch("/stream");
      const two = recorder();
      const waiting = watchJob(second.id, {
        baseUrl: limited.baseUrl,
        token,
        fetch: counted.fetch,
        retryDelay: 10,
        ...two.callbacks,
      });
      try {
        await waitFor(() => counted.calls.length >= 2, { what: "a second attempt" });
        holder.close();
        await waitFor(() => two.seen.connections.at(-1) === true, { what: "the second stream" });
        limited.release("release");
        await waitFor(() => two.seen.ends.length > 0, { what: "the end" });
      } finally {
        holder.close();
        waiting.close();
      }
      const refused = counted.calls.filter((call) => call.status === 429);
      assert.ok(refused.length >= 1);
      const gaps = counted.calls.slice(1).map((call, i) => call.at - counted.calls[i].at);
      assert.ok(Math.min(...gaps) >= 990, `retried ${gaps} ms later, not after Retry-After: 1`);
      const [error] = two.seen.errors;
      assert.equal(error.code, "too_many_requests");
      assert.equal(error.status, 429);
      assert.equal(error.retryAfter, 1);
      assert.equal(error.fatal, false);
      assert.deepEqual(two.seen.ends, [{ job_id: second.id, status: "succeeded" }]);
    } finally {
      await limited.stop();
    }
  });
});

describe("fallback to long polling", () => {
  for (const mode of /** @type {const} */ (["buffer", "hold"])) {
    test(`a proxy that holds the stream back (${mode === "buffer" ? "its body" : "even its headers"}): long polling takes over`, async () => {
      const proxy = await misbehavingProxy(server.origin, mode);
      const job = await api.submit("steps", { count: 4, interval: 0.1 });
      const { seen, callbacks } = recorder();
      const watch = watchJob(job.id, {
        baseUrl: proxy.baseUrl,
        stallTimeout: 300,
        fallbackAfter: 2,
        retryDelay: 20,
        ...callbacks,
      });
      try {
        await waitFor(() => seen.ends.length > 0, { what: "the end" });
      } finally {
        watch.close();
        proxy.close();
      }
      assert.deepEqual(seen.events, await server.events(job.id));
      assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
      assert.equal(proxy.paths.filter((path) => path.includes("/stream")).length, 2);
      assert.ok(proxy.paths.some((path) => path.includes(`/jobs/${job.id}/events?after=0&wait=25`)));
      assert.deepEqual(
        seen.errors.map((error) => error.code),
        ["stalled", "stalled"],
      );
    });
  }
});

describe("a proxy that cuts the stream and drops ?after=", () => {
  test("the replay from the start is deduplicated: nothing repeated, nothing missed", async () => {
    const proxy = await misbehavingProxy(server.origin, "cut-and-replay");
    const job = await api.submit("steps", { count: 5, interval: 0.05 });
    const { seen, callbacks } = recorder();
    const watch = watchJob(job.id, { baseUrl: proxy.baseUrl, retryDelay: 20, ...callbacks });
    try {
      await waitFor(() => seen.ends.length > 0, { what: "the end" });
    } finally {
      watch.close();
      proxy.close();
    }
    const streams = proxy.paths.filter((path) => path.includes("/stream"));
    assert.deepEqual(streams, [`/api/jobs/${job.id}/stream`, `/api/jobs/${job.id}/stream?after=3`]);
    assert.deepEqual(seen.events, await server.events(job.id));
    assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
    assert.deepEqual(seen.errors, []);
  });
});
