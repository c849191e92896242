// The pure parts: the SSE parser, the job state's fold, the backoff's bounds, and the module's
// contract (its exports, and that it loads without a browser).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import * as underway from "../underway.js";
import { backoffDelay, foldJob, jobState, SseParser } from "../underway.js";
import { waitFor } from "./helpers/server.mjs";

/** @param {string[]} chunks */
function parse(chunks) {
  /** @type {{event: string, data: string, id: string|null}[]} */
  const events = [];
  const parser = new SseParser((event) => events.push(event));
  for (const chunk of chunks) parser.feed(chunk);
  return events;
}

describe("SseParser", () => {
  test("reads events, names, ids and multi-line data; skips comments and retry", () => {
    const text = 'retry: 2000\n\nid: 1\nevent: status\ndata: {"a":1}\n\n: ping\n\ndata: one\ndata: two\n\n';
    assert.deepEqual(parse([text]), [
      { event: "status", data: '{"a":1}', id: "1" },
      { event: "message", data: "one\ntwo", id: "1" },
    ]);
  });

  test("lines may end with CRLF, CR or LF, split anywhere between chunks", () => {
    const text = "\ufeffid: 7\r\nevent: log\rdata: x\r\n\r\nevent: end\ndata: {}\n\n";
    const expected = [
      { event: "log", data: "x", id: "7" },
      { event: "end", data: "{}", id: "7" },
    ];
    for (let cut = 0; cut <= text.length; cut++) {
      assert.deepEqual(parse([text.slice(0, cut), text.slice(cut)]), expected, `cut at ${cut}`);
    }
    assert.deepEqual(parse([...text]), expected);
  });

  test("no data, no event; an id with NUL is ignored; a field without colon", () => {
    assert.deepEqual(parse(["event: x\n\nid: 1\0\ndata\n\n"]), [{ event: "message", data: "", id: null }]);
  });
});

const at = "2026-01-01T00:00:00.000Z";
/** @param {number} seq @param {string} type @param {any} data */
const ev = (seq, type, data) => ({ seq, job_id: "j", type, at, data });

describe("foldJob", () => {
  const events = [
    ev(1, "status", { status: "queued", attempt: 0 }),
    ev(2, "status", { status: "running", attempt: 1 }),
    ev(3, "progress", { current: 1, total: 4, percent: 25, message: "one", step: 1, steps: 2 }),
    ev(4, "log", { level: "info", message: "hello" }),
    ev(5, "status", { status: "waiting", attempt: 1, reason: "ask" }),
    ev(6, "prompt", { key: "q1", message: "Go?", options: ["yes", "no"] }),
    ev(7, "status", { status: "running", attempt: 1, cancel_requested: true }),
  ];

  test("folds status, progress, prompt and answer", () => {
    const waiting = events.slice(0, 6).reduce(foldJob, null);
    assert.equal(waiting.status, "waiting");
    assert.deepEqual(waiting.prompt, { key: "q1", message: "Go?", options: ["yes", "no"] });
    assert.deepEqual(waiting.progress, {
      current: 1,
      total: 4,
      percent: 25,
      rate: null,
      eta_s: null,
      message: "one",
      step: 1,
      steps: 2,
    });
    assert.equal(waiting.message, "one");
    assert.equal(waiting.step, 1);
    const answered = foldJob(
      foldJob(waiting, ev(7, "answer", { key: "q1", value: "yes" })),
      ev(8, "status", { status: "running", attempt: 1 }),
    );
    assert.equal(answered.prompt, null);
    assert.equal(answered.status, "running");
    assert.equal(answered.lastSeq, 8);
  });

  test("is pure, ignores what it has seen, and starts over on a manual retry", () => {
    const state = events.reduce(foldJob, null);
    const frozen = JSON.stringify(state);
    assert.equal(foldJob(state, events[2]), state);
    assert.equal(JSON.stringify(state), frozen);
    assert.equal(state.cancelRequested, true);
    const failed = foldJob(
      state,
      ev(8, "status", { status: "failed", attempt: 1, error: { type: "E", message: "m" } }),
    );
    assert.equal(failed.ended, true);
    assert.deepEqual(failed.error, { type: "E", message: "m" });
    assert.equal(JSON.stringify(state), frozen);
    const again = foldJob(failed, ev(9, "status", { status: "queued", attempt: 1, reason: "retry" }));
    assert.deepEqual(
      [again.ended, again.error, again.cancelRequested, again.status],
      [false, null, false, "queued"],
    );
    const done = foldJob(again, ev(10, "status", { status: "succeeded", attempt: 2, result: 42 }));
    assert.deepEqual([done.result, done.ended, done.attempt], [42, true, 2]);
  });

  test("jobState reads a job's JSON into the same shape", () => {
    const state = jobState({
      id: "j",
      status: "running",
      attempt: 1,
      progress: { current: 2, total: 4, percent: 50, message: "half" },
      prompt: null,
      result: null,
      error: null,
      cancel_requested: false,
      last_seq: 9,
    });
    assert.deepEqual(Object.keys(state).sort(), Object.keys(foldJob(null, events[0])).sort());
    assert.deepEqual(
      [state.message, state.lastSeq, state.ended, state.progress?.percent],
      ["half", 9, false, 50],
    );
  });
});

test("backoffDelay: between half and all of base × 2^(n-1), capped", () => {
  for (let failures = 1; failures <= 12; failures++) {
    const ceiling = Math.min(30000, 1000 * 2 ** (failures - 1));
    for (let i = 0; i < 50; i++) {
      const delay = backoffDelay(failures);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `${delay} for ${failures}`);
    }
  }
});

test("the module exports the contract's names", () => {
  const names = [
    "VERSION",
    "UnderwayError",
    "watchJob",
    "watchBatch",
    "watchJobs",
    "foldJob",
    "jobState",
    "createClient",
    "submit",
    "submitBatch",
    "get",
    "list",
    "cancel",
    "cancelAll",
    "answer",
    "retry",
    "retryFailed",
    "pauseBatch",
    "resumeBatch",
    "pauseQueue",
    "resumeQueue",
    "streamToken",
    "jobStore",
    "batchStore",
    "jobsStore",
    "createHooks",
  ];
  for (const name of names) assert.ok(name in underway, name);
  const error = new underway.UnderwayError("m", { code: "c", status: 418, details: { x: 1 } });
  assert.ok(error instanceof Error);
  assert.deepEqual([error.code, error.status, error.details, error.message], ["c", 418, { x: 1 }, "m"]);
});

describe("protocol races the real server seldom shows", () => {
  /** A `fetch` whose every answer is this SSE text, then the end of the stream. @param {string} text */
  const answering = (text) =>
    /** @type {typeof fetch} */ (
      async () => new Response(text, { headers: { "content-type": "text/event-stream" } })
    );
  /** @param {number} seq @param {string} [job] */
  const frame = (seq, job = "a") =>
    `event: log\ndata: ${JSON.stringify({ seq, job_id: job, type: "log", at, data: { level: "info", message: `${seq}` } })}\n\n`;

  test("watchJobs: events already in the snapshot are not delivered again", async () => {
    const snapshot = { jobs: [{ id: "a", status: "running", attempt: 1, last_seq: 3 }] };
    const text = `event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n${frame(2)}${frame(3)}${frame(4)}`;
    /** @type {number[]} */
    const seen = [];
    /** @type {any} */
    let states = null;
    const watch = underway.watchJobs(
      { jobs: ["a"] },
      {
        baseUrl: "http://127.0.0.1:9/api",
        fetch: answering(text),
        retryDelay: 60000,
        onEvent: (event) => seen.push(event.seq),
        onJobs: (found) => (states = found),
      },
    );
    await waitFor(() => seen.length > 0, { what: "an event" });
    watch.close();
    assert.deepEqual(seen, [4]);
    assert.equal(states.a.lastSeq, 4);
  });

  test("WebSocket: pushes that come before the reply naming their subscription are kept", async () => {
    /** A server that pushes the subscription's events before it replies. */
    class EagerSocket {
      /** @param {string} url */
      constructor(url) {
        this.url = url;
        /** @type {any} */ this.onopen = null;
        /** @type {any} */ this.onmessage = null;
        /** @type {any} */ this.onclose = null;
        /** @type {any} */ this.onerror = null;
        setTimeout(() => this.onopen?.(), 0);
      }
      /** @param {string} data */
      send(data) {
        const message = JSON.parse(data);
        if (message.op !== "subscribe") return;
        const push = (/** @type {any} */ body) => this.onmessage?.({ data: JSON.stringify(body) });
        const event = (/** @type {number} */ seq) => ({ seq, job_id: "a", type: "log", at, data: {} });
        push({ sub: "7", event: event(1) });
        push({ sub: "7", event: event(2) });
        push({ reply: message.id, ok: true, sub: "7" });
        push({ sub: "7", event: event(3) });
        push({ sub: "7", end: { job_id: "a", status: "succeeded" } });
      }
      close() {}
    }
    /** @type {number[]} */
    const seen = [];
    /** @type {any[]} */
    const ends = [];
    underway.watchJob("a", {
      baseUrl: "http://127.0.0.1:9/api",
      transport: "ws",
      WebSocket: EagerSocket,
      onEvent: (event) => seen.push(event.seq),
      onEnd: (info) => ends.push(info),
    });
    await waitFor(() => ends.length > 0, { what: "the end" });
    assert.deepEqual(seen, [1, 2, 3]);
    assert.deepEqual(ends, [{ job_id: "a", status: "succeeded" }]);
  });
});
