// Watching jobs, many jobs and batches over the three transports, against a real server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { EventSource } from "eventsource";

import { createClient, foldJob, jobState, watchBatch, watchJob, watchJobs } from "../underway.js";
import { countingFetch, recorder, seqs, startServer, waitFor } from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;
/** @type {ReturnType<typeof createClient>} */
let api;
const TRANSPORTS = /** @type {const} */ (["sse", "ws", "poll"]);

before(async () => {
  server = await startServer();
  api = createClient({ baseUrl: server.baseUrl });
});
after(() => server?.stop());

/**
 * Watch a job to its end; what the watch reported.
 * @param {string} id @param {import("../underway.js").WatchOptions} [options]
 */
async function watchToEnd(id, options = {}) {
  const { seen, callbacks } = recorder();
  const watch = watchJob(id, { baseUrl: server.baseUrl, retryDelay: 50, ...options, ...callbacks });
  try {
    await waitFor(() => seen.ends.length > 0 || seen.errors.some((e) => e.fatal), {
      timeout: 15000,
      what: "the end",
    });
  } finally {
    watch.close();
  }
  assert.deepEqual(seen.errors, []);
  return seen;
}

describe("watchJob", () => {
  test("folds the events into the state the job itself has, prompt and answer included", async () => {
    const job = await api.submit("confirm", { question: "Ship it?" });
    const { seen, callbacks } = recorder();
    const watch = watchJob(job.id, { baseUrl: server.baseUrl, ...callbacks });
    try {
      const waiting = await waitFor(() => seen.job?.status === "waiting" && seen.job, {
        what: "the question",
      });
      assert.equal(waiting.prompt.message, "Ship it?");
      assert.deepEqual(waiting.prompt.options, ["yes", "no"]);
      assert.equal(waiting.step, 1);
      assert.equal(waiting.message, "asking");
      assert.equal(waiting.ended, false);
      await api.answer(job.id, "yes");
      await waitFor(() => seen.ends.length === 1, { what: "the end" });
    } finally {
      watch.close();
    }
    const done = await api.get(job.id);
    const state = seen.job;
    assert.equal(state.status, "succeeded");
    assert.deepEqual(state.result, { answer: "yes" });
    assert.equal(state.prompt, null);
    assert.equal(state.ended, true);
    assert.equal(state.attempt, 1);
    assert.equal(state.lastSeq, done.last_seq);
    assert.deepEqual(state.progress, {
      current: 1,
      total: 1,
      percent: 100,
      rate: state.progress.rate,
      eta_s: state.progress.eta_s,
      message: "done",
      step: 2,
      steps: 2,
    });
    assert.deepEqual(state, jobState(done));
    assert.deepEqual(seen.events.reduce(foldJob, null), jobState(done));
    assert.deepEqual(seqs(seen.events), seqs(await server.events(job.id)));
    assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
    assert.deepEqual(seen.connections.at(-1), false);
  });

  test("a failure and a cancel fold into the job's own state too", async () => {
    const failed = await api.submit("boom", { message: "no luck" });
    const cancelled = await api.submit("add", { a: 1 }, { delay: 60 });
    await api.cancel(cancelled.id); // queued: at once (a body-less write passes the CSRF rule)
    for (const job of [failed, cancelled]) {
      const seen = await watchToEnd(job.id);
      const now = await api.get(job.id);
      assert.deepEqual(seen.job, jobState(now));
      assert.equal(seen.ends[0].status, now.status);
    }
    const state = jobState(await api.get(failed.id));
    assert.equal(state.error.type, "ValueError");
    assert.equal(state.error.message, "no luck");
  });

  test("the three transports deliver the same events in the same order", async () => {
    const job = await api.submit("steps", { count: 6, interval: 0.05 });
    const live = await Promise.all(TRANSPORTS.map((transport) => watchToEnd(job.id, { transport })));
    const stored = await server.events(job.id);
    assert.ok(stored.length >= 6 * 2 + 3, `${stored.length} events`);
    for (const seen of live) assert.deepEqual(seen.events, stored);
    // and once more from the store, the job being over
    const replayed = await Promise.all(TRANSPORTS.map((transport) => watchToEnd(job.id, { transport })));
    for (const seen of replayed) {
      assert.deepEqual(seen.events, stored);
      assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
    }
  });

  test("resumes after `after` without repeating, with the state read from the job", async () => {
    const job = await api.submit("steps", { count: 3, interval: 0.01 });
    const first = await watchToEnd(job.id);
    for (const transport of TRANSPORTS) {
      const seen = await watchToEnd(job.id, { after: 4, transport });
      assert.deepEqual(
        seqs(seen.events),
        seqs(first.events).filter((seq) => seq > 4),
        transport,
      );
      assert.equal(seen.job.status, "succeeded", transport);
      assert.deepEqual(seen.job.result, { done: 3 }, transport);
    }
  });

  test("a job that ended before: 204 (or its WebSocket and long-poll twins) ends it once, no reconnect", async () => {
    const job = await api.submit("add", { a: 2, b: 3 });
    await watchToEnd(job.id);
    const { last_seq: last } = await api.get(job.id);
    for (const transport of TRANSPORTS) {
      const counted = countingFetch("/api/jobs/");
      const seen = await watchToEnd(job.id, { after: last, transport, fetch: counted.fetch, retryDelay: 1 });
      assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }], transport);
      assert.deepEqual(seen.events, [], transport);
      assert.equal(seen.job.result, 5, transport);
      const streams = counted.calls.filter((call) => /\/stream|\/events/.test(call.url));
      if (transport === "sse")
        assert.deepEqual(
          streams.map((call) => call.status),
          [204],
        );
      if (transport === "poll") assert.equal(streams.length, 1);
      // a reconnect would come within a few ms (retryDelay: 1): look a little longer
      const before = counted.calls.length;
      await new Promise((done) => setTimeout(done, 100));
      assert.equal(counted.calls.length, before, `${transport} asked again after the end`);
    }
  });

  test("an unknown job is a fatal job_not_found, reported once, without an end", async () => {
    for (const transport of TRANSPORTS) {
      const { seen, callbacks } = recorder();
      const watch = watchJob("nope", { baseUrl: server.baseUrl, transport, ...callbacks });
      await waitFor(() => seen.errors.length > 0, { what: `the error (${transport})` });
      watch.close();
      assert.equal(seen.errors[0].code, "job_not_found", transport);
      assert.equal(seen.errors[0].status, 404, transport);
      assert.equal(seen.errors[0].fatal, true, transport);
      assert.deepEqual(seen.ends, []);
    }
  });

  test("EventSource (the npm package) as the SSE client gives the same events, and stops on 204", async () => {
    const job = await api.submit("steps", { count: 3, interval: 0.03 });
    const options = { sseClient: /** @type {const} */ ("eventsource"), EventSource };
    const seen = await watchToEnd(job.id, options);
    assert.deepEqual(seen.events, await server.events(job.id));
    assert.deepEqual(seen.ends, [{ job_id: job.id, status: "succeeded" }]);
    const again = await watchToEnd(job.id, { ...options, after: seen.job.lastSeq });
    assert.deepEqual(again.events, []);
    assert.equal(again.ends.length, 1);
  });
});

describe("watchJobs", () => {
  test("follows many jobs on one connection, each to its end", async () => {
    const jobs = await Promise.all([1, 2, 3].map(() => api.submit("steps", { count: 3, interval: 0.05 })));
    const ids = jobs.map((job) => job.id);
    for (const transport of TRANSPORTS) {
      const counted = countingFetch();
      const { seen, callbacks } = recorder();
      const watch = watchJobs(
        { jobs: ids },
        { baseUrl: server.baseUrl, transport, fetch: counted.fetch, pollInterval: 50, ...callbacks },
      );
      try {
        await waitFor(() => seen.jobs && ids.every((id) => seen.jobs[id]?.ended), {
          what: `every job ended (${transport})`,
        });
      } finally {
        watch.close();
      }
      for (const id of ids) assert.deepEqual(seen.jobs[id], jobState(await api.get(id)), transport);
      if (transport === "sse") assert.equal(counted.calls.filter((c) => c.url.includes("/stream")).length, 1);
      if (transport === "ws") assert.equal(counted.calls.length, 0);
      assert.deepEqual(seen.errors, []);
    }
  });

  test("delivers each job's live events once, in order, after its snapshot", async () => {
    const release = `release-many-${Date.now()}`;
    const queue = `many-${Date.now()}`;
    const held = await api.submit("hold", { release: server.path(release), interval: 0.03 }, { queue });
    for (const transport of /** @type {const} */ (["sse", "ws"])) {
      const { seen, callbacks } = recorder();
      const watch = watchJobs({ queue }, { baseUrl: server.baseUrl, transport, ...callbacks });
      try {
        await waitFor(() => seen.events.length >= 3, { what: `live events (${transport})` });
      } finally {
        watch.close();
      }
      const numbers = seqs(seen.events);
      assert.deepEqual(
        numbers,
        [...numbers].sort((a, b) => a - b),
        transport,
      );
      assert.equal(new Set(numbers).size, numbers.length, transport);
      assert.equal(seen.jobs[held.id].lastSeq, numbers.at(-1), transport);
    }
    server.release(release);
  });

  test("follows the jobs a search finds, and no other", async () => {
    const tag = `needle-${Date.now()}`;
    const wanted = await api.submit("hold", { release: server.path(tag), interval: 0.03 });
    const other = await api.submit("hold", { release: server.path(`hay-${tag.slice(7)}`), interval: 0.03 });
    for (const transport of TRANSPORTS) {
      const { seen, callbacks } = recorder();
      const filter = { q: tag.toUpperCase() };
      const options = { baseUrl: server.baseUrl, transport, pollInterval: 50, ...callbacks };
      const watch = watchJobs(filter, options);
      try {
        await waitFor(() => seen.jobs?.[wanted.id]?.status === "running", { what: `the job (${transport})` });
        if (transport !== "poll") await waitFor(() => seen.events.length >= 2, { what: `ticks (${transport})` });
      } finally {
        watch.close();
      }
      assert.deepEqual(Object.keys(seen.jobs), [wanted.id], transport);
      assert.ok(
        seen.events.every((/** @type {any} */ e) => e.job_id === wanted.id),
        transport,
      );
      assert.deepEqual(seen.errors, []);
    }
    server.release(tag);
    server.release(`hay-${tag.slice(7)}`);
    assert.equal((await api.get(other.id)).id, other.id);
  });
});

test("watchJobs follows a task and a label, and no other job", async () => {
  const tag = `label-${Date.now()}`;
  const release = server.path(tag);
  const wanted = await api.submit("hold", { release, interval: 0.03 }, { labels: { run: tag } });
  const unlabelled = await api.submit("hold", { release, interval: 0.03 });
  for (const transport of TRANSPORTS) {
    const { seen, callbacks } = recorder();
    const options = { baseUrl: server.baseUrl, transport, pollInterval: 50, ...callbacks };
    const watch = watchJobs({ task: "hold", label: `run:${tag}` }, options);
    try {
      await waitFor(() => seen.jobs?.[wanted.id]?.status === "running", { what: `the job (${transport})` });
    } finally {
      watch.close();
    }
    assert.deepEqual(Object.keys(seen.jobs), [wanted.id], transport);
    assert.ok(!seen.events.some((/** @type {any} */ e) => e.job_id === unlabelled.id), transport);
  }
  server.release(tag);
});

describe("watchBatch", () => {
  test("reports the batch's progress and ends once with its final view", async () => {
    for (const transport of TRANSPORTS) {
      const batch = await api.submitBatch("item", [{ n: 1 }, { n: 2 }, { n: 3, fail: true }, { n: 4 }]);
      const { seen, callbacks } = recorder();
      const watch = watchBatch(batch.id, {
        baseUrl: server.baseUrl,
        transport,
        pollInterval: 50,
        ...callbacks,
      });
      try {
        await waitFor(() => seen.ends.length > 0, { what: `the batch's end (${transport})` });
      } finally {
        watch.close();
      }
      const end = seen.ends[0];
      assert.equal(seen.ends.length, 1);
      assert.equal(end.status, "partial", transport);
      assert.deepEqual([end.counts.succeeded, end.counts.failed, end.total], [3, 1, 4], transport);
      assert.ok(seen.batches.length >= 1, transport);
      assert.equal(seen.batches[0].batch.id, batch.id);
      assert.deepEqual(seen.errors, []);
    }
  });
});
