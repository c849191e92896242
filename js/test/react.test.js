// The React hooks in jsdom (vitest), against a real server with authentication on.
import { act, cleanup, render, renderHook, waitFor } from "@testing-library/react";
import { createElement, StrictMode } from "react";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";

import { createClient, jobState, jobStore, watchJob } from "../underway.js";
import { useBatch, useJob, useJobs } from "../underway-react.js";
import { countingFetch, startServer } from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;
/** @type {ReturnType<typeof createClient>} */
let user;
let userKey = "";
let adminKey = "";

beforeAll(async () => {
  server = await startServer({ args: ["--auth", "on"] });
  userKey = server.key("ada", "user");
  adminKey = server.key("root", "admin");
  user = createClient({ baseUrl: server.baseUrl, token: userKey });
});
afterAll(() => server?.stop());
afterEach(() => cleanup());

/** A token function made anew by each caller: it counts its calls in `calls`. */
function tokens() {
  const calls = { count: 0 };
  /** A new function each time it is called (as an inline arrow in a component would be). */
  const make = () => async () => {
    calls.count += 1;
    return (await user.streamToken({ ttl: 60 })).token;
  };
  return { calls, make };
}

/** Open SSE streams on the server (admins may read /metrics). */
async function openStreams() {
  const answer = await fetch(`${server.baseUrl}/metrics`, {
    headers: { Authorization: `Bearer ${adminKey}` },
  });
  const text = await answer.text();
  return Number(/^underway_open_streams\{transport="sse"\} ([0-9.]+)$/m.exec(text)?.[1] ?? 0);
}

/** @param {() => boolean | Promise<boolean>} condition @param {number} [timeout] */
const eventually = (condition, timeout = 10000) =>
  waitFor(async () => expect(await condition()).toBe(true), { timeout, interval: 20 });

describe("useJob", () => {
  test("gives the job's folded state, its events and its end", async () => {
    const job = await user.submit("steps", { count: 4, interval: 0.02 });
    const token = tokens();
    const { result } = renderHook(() => useJob(job.id, { baseUrl: server.baseUrl, token: token.make() }));
    await eventually(() => result.current.status === "succeeded");
    const done = await user.get(job.id);
    expect(result.current.job).toEqual(jobState(done));
    expect(result.current.progress).toEqual(jobState(done).progress);
    expect(result.current.events.map((/** @type {any} */ e) => e.seq)).toEqual(
      Array.from({ length: done.last_seq }, (_, i) => i + 1),
    );
    expect(result.current.error).toBe(null);
    await eventually(() => result.current.connected === false);
  });

  test("connects when `enabled` turns true (and not before)", async () => {
    const job = await user.submit("add", { a: 1, b: 1 });
    const counted = countingFetch("/stream");
    const token = tokens();
    const { result, rerender } = renderHook(
      ({ enabled }) =>
        useJob(job.id, { baseUrl: server.baseUrl, token: token.make(), enabled, fetch: counted.fetch }),
      { initialProps: { enabled: false } },
    );
    expect(result.current.job).toBe(null);
    expect(counted.calls.length).toBe(0);
    expect(token.calls.count).toBe(0);
    rerender({ enabled: true });
    await eventually(() => result.current.status === "succeeded");
    expect(result.current.job?.result).toBe(2);
    expect(counted.calls.length).toBe(1);
  });

  test("a token function that is new on every render reconnects nothing", async () => {
    const release = server.path("release-identity");
    const job = await user.submit("hold", { release, interval: 0.02 });
    const counted = countingFetch("/stream");
    const token = tokens();
    let renders = 0;
    const { result, rerender } = renderHook(() => {
      renders += 1;
      return useJob(job.id, { baseUrl: server.baseUrl, token: token.make(), fetch: counted.fetch });
    });
    await eventually(() => result.current.events.length >= 20);
    for (let i = 0; i < 10; i++) rerender();
    server.release("release-identity");
    await eventually(() => result.current.status === "succeeded");
    expect(renders).toBeGreaterThan(20);
    expect(counted.calls.length).toBe(1);
    expect(token.calls.count).toBe(1);
  });

  test("components watching one job share one connection; StrictMode does not reconnect", async () => {
    const job = await user.submit("steps", { count: 3, interval: 0.05 });
    const counted = countingFetch("/stream");
    const token = tokens();
    /** @type {Record<string, any>} */
    const seen = {};
    /** @param {{name: string}} props */
    function Progress({ name }) {
      const state = useJob(job.id, { baseUrl: server.baseUrl, token: token.make(), fetch: counted.fetch });
      seen[name] = state;
      return createElement("p", null, `${name}: ${state.status}`);
    }
    const view = render(
      createElement(
        StrictMode,
        null,
        createElement(Progress, { name: "one" }),
        createElement(Progress, { name: "two" }),
      ),
    );
    await eventually(() => seen.one?.status === "succeeded" && seen.two?.status === "succeeded");
    expect(view.container.textContent).toBe("one: succeededtwo: succeeded");
    expect(seen.one).toBe(seen.two); // the same snapshot object
    expect(counted.calls.length).toBe(1);
    expect(token.calls.count).toBe(1);
  });

  test("unmounting the last component closes the stream", async () => {
    const job = await user.submit("hold", { release: server.path("release-unmount"), interval: 0.05 });
    const token = tokens();
    const { result, unmount } = renderHook(() =>
      useJob(job.id, { baseUrl: server.baseUrl, token: token.make(), linger: 50 }),
    );
    await eventually(() => result.current.connected);
    await eventually(async () => (await openStreams()) === 1);
    unmount();
    await eventually(async () => (await openStreams()) === 0);
    server.release("release-unmount");
  });
});

describe("shared stores", () => {
  test("a store subscribed again after it closed starts over (no event twice)", async () => {
    const job = await user.submit("hold", { release: server.path("release-store"), interval: 0.03 });
    const options = { baseUrl: server.baseUrl, token: userKey, linger: 10 };
    const store = jobStore(job.id, options);
    const seqs = () => store.getSnapshot().events.map((/** @type {any} */ e) => e.seq);
    let unsubscribe = store.subscribe(() => {});
    await eventually(() => seqs().length >= 3);
    unsubscribe();
    await eventually(() => jobStore(job.id, options) !== store); // closed and dropped
    unsubscribe = store.subscribe(() => {});
    server.release("release-store");
    await eventually(() => store.getSnapshot().status === "succeeded");
    unsubscribe();
    const stored = await server.events(job.id, userKey);
    expect(seqs()).toEqual(stored.map((e) => e.seq));
  });
});

describe("useJobs and useBatch", () => {
  test("many jobs on one connection, and a batch to its end", async () => {
    const jobs = await Promise.all([1, 2].map((n) => user.submit("add", { a: n })));
    const ids = jobs.map((j) => j.id);
    const batch = await user.submitBatch("item", [{ n: 1 }, { n: 2 }]);
    const counted = countingFetch("/stream");
    const token = tokens();
    const { result } = renderHook(() => ({
      many: useJobs({ jobs: ids }, { baseUrl: server.baseUrl, token: token.make(), fetch: counted.fetch }),
      batch: useBatch(batch.id, { baseUrl: server.baseUrl, token: token.make(), fetch: counted.fetch }),
    }));
    await eventually(
      () =>
        ids.every((id) => result.current.many.jobs[id]?.ended) && result.current.batch.status === "completed",
    );
    expect(result.current.many.jobs[ids[1]].result).toBe(2);
    expect(result.current.batch.batch.counts.succeeded).toBe(2);
    expect(counted.calls.filter((c) => c.url.includes("/api/stream?")).length).toBe(1);
  });
});

describe("in a browser", () => {
  test("deliveries come at most once per animation frame", async () => {
    const job = await user.submit("steps", { count: 5, interval: 0.01 });
    await waitFor(async () => expect((await user.get(job.id)).status).toBe("succeeded"));
    let events = 0;
    let states = 0;
    let ended = false;
    const watch = watchJob(job.id, {
      baseUrl: server.baseUrl,
      token: userKey,
      onEvent: () => (events += 1),
      onJob: () => (states += 1),
      onEnd: () => (ended = true),
    });
    await eventually(() => ended);
    watch.close();
    expect(events).toBeGreaterThanOrEqual(8);
    expect(states).toBeLessThanOrEqual(2); // the history came in a chunk or two: one frame, or two
  });

  test("a hidden tab pauses the stream and catches up when shown", async () => {
    const release = server.path("release-hidden");
    const job = await user.submit("hold", { release, interval: 0.03 });
    const token = tokens();
    const { result } = renderHook(() => useJob(job.id, { baseUrl: server.baseUrl, token: token.make() }));
    await eventually(() => result.current.connected && result.current.events.length >= 3);
    setVisibility("hidden");
    await eventually(() => !result.current.connected);
    await eventually(async () => (await openStreams()) === 0);
    const seenWhileHidden = result.current.events.length;
    const stored = await server.events(job.id, userKey);
    await eventually(async () => (await server.events(job.id, userKey)).length > stored.length + 5);
    expect(result.current.events.length).toBe(seenWhileHidden);
    setVisibility("visible");
    await eventually(() => result.current.connected);
    server.release("release-hidden");
    await eventually(() => result.current.status === "succeeded");
    const all = await server.events(job.id, userKey);
    expect(result.current.events).toEqual(all);
  });
});

/** @param {"hidden"|"visible"} state */
function setVisibility(state) {
  act(() => {
    Object.defineProperty(document, "visibilityState", { value: state, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  });
}
