// The REST helpers against a server with authentication on: what they return, and the errors
// (UnderwayError with underway's code and the HTTP status).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import * as underway from "../underway.js";
import { createClient, UnderwayError, VERSION } from "../underway.js";
import { freePort, startServer, waitFor } from "./helpers/server.mjs";

/** @type {import("./helpers/server.mjs").UnderwayServer} */
let server;
/** @type {ReturnType<typeof createClient>} */
let user;
/** @type {ReturnType<typeof createClient>} */
let admin;

before(async () => {
  server = await startServer({ args: ["--auth", "on"] });
  user = createClient({ baseUrl: server.baseUrl, token: server.key("ada", "user") });
  admin = createClient({ baseUrl: server.baseUrl, token: server.key("root", "admin") });
});
after(() => server?.stop());

/** @param {Promise<unknown>} promise @param {string} code @param {number} status */
async function refused(promise, code, status) {
  const error = await promise.then(
    () => assert.fail(`expected ${code}`),
    (/** @type {unknown} */ error) => error,
  );
  assert.ok(error instanceof UnderwayError, String(error));
  assert.equal(error.code, code, error.message);
  assert.equal(error.status, status);
  return error;
}

/** @param {string} id @param {(job: any) => boolean} done */
const until = (id, done) =>
  waitFor(
    async () => {
      const job = await user.get(id);
      return done(job) && job;
    },
    { what: `job ${id}` },
  );

describe("REST helpers", () => {
  test("VERSION is the Python package's", () => {
    assert.equal(VERSION, "0.1.0");
  });

  test("submit, get, list, cancel, retry, answer", async () => {
    const job = await user.submit("add", { a: 2, b: 3 }, { labels: { team: "js" }, priority: 3 });
    assert.equal(job.task, "add");
    assert.equal(job.owner, "ada");
    assert.deepEqual(job.labels, { team: "js" });
    const done = await until(job.id, (j) => j.status === "succeeded");
    assert.equal(done.result, 5);
    const page = await user.list({ status: ["succeeded"], label: "team:js" });
    assert.deepEqual(
      page.jobs.map((/** @type {any} */ j) => j.id),
      [job.id],
    );
    assert.equal((await user.retry(job.id)).status, "queued");

    const later = await user.submit("add", { a: 1 }, { delay: 60, queue: "later" });
    assert.equal((await user.cancel(later.id)).status, "cancelled");
    await refused(user.cancel(later.id), "invalid_state", 409);
    const more = await Promise.all(
      [1, 2].map(() => user.submit("add", { a: 1 }, { delay: 60, queue: "later" })),
    );
    assert.deepEqual(await user.cancelAll({ queue: "later" }), { cancelled: more.length });

    const asking = await user.submit("confirm", {});
    const waiting = await until(asking.id, (j) => j.status === "waiting");
    await refused(user.answer(asking.id, "maybe"), "invalid_arguments", 422);
    await refused(user.answer(asking.id, "yes", "another-question"), "invalid_state", 409);
    assert.equal((await user.answer(asking.id, "yes", waiting.prompt.key)).status, "running");
    const answered = await until(asking.id, (j) => j.status === "succeeded");
    assert.deepEqual(answered.result, { answer: "yes" });
  });

  test("batches: submit, pause, resume, retry the failed", async () => {
    const batch = await user.submitBatch("item", [{ n: 1 }, { n: 2, fail: true }], { name: "squares" });
    assert.equal(batch.total, 2);
    assert.equal(batch.name, "squares");
    await waitFor(async () => (await user.getBatch(batch.id)).status === "partial", { what: "the batch" });
    assert.equal((await user.pauseBatch(batch.id)).paused, true);
    assert.equal((await user.resumeBatch(batch.id)).paused, false);
    const retried = await user.retryFailed(batch.id);
    assert.equal(retried.retried, 1);
    assert.equal(retried.batch.id, batch.id);
  });

  test("search and selection: list, cancelAll and retryAll by q and ids", async () => {
    const tag = `needle-${Date.now()}`;
    const failing = await Promise.all([1, 2].map((n) => user.submit("boom", { message: `${tag} ${n}` })));
    const other = await user.submit("boom", { message: "hay" });
    for (const job of [...failing, other]) await until(job.id, (j) => j.status === "failed");
    const ids = failing.map((job) => job.id);
    const found = await user.list({ q: tag.toUpperCase() });
    assert.deepEqual(found.jobs.map((/** @type {any} */ j) => j.id).sort(), [...ids].sort());
    const picked = await user.list({ ids: [ids[0], other.id] });
    assert.deepEqual(picked.jobs.map((/** @type {any} */ j) => j.id).sort(), [ids[0], other.id].sort());

    assert.deepEqual(await user.retryAll({ q: tag }), { retried: 2 });
    for (const id of ids) await until(id, (j) => j.status === "failed" && j.attempt === 2);
    assert.equal((await user.get(other.id)).attempt, 1);
    assert.deepEqual(await user.retryAll({ ids: [other.id], status: "succeeded" }), { retried: 0 });
    await refused(user.retryAll({ status: ["running"] }), "invalid_request", 422);
    await refused(user.retryAll({ ids: [] }), "invalid_request", 422);
    const reader = createClient({ baseUrl: server.baseUrl, token: (await user.streamToken({})).token });
    await refused(reader.retryAll({}), "forbidden", 403);

    const queue = `selected-${Date.now()}`;
    const later = await Promise.all([1, 2].map((a) => user.submit("add", { a }, { delay: 60, queue })));
    assert.deepEqual(await user.cancelAll({ queue, ids: [later[0].id] }), { cancelled: 1 });
    assert.deepEqual(await user.cancelAll({ q: later[1].id }), { cancelled: 1 });
    assert.equal((await user.get(later[0].id)).status, "cancelled");
  });

  test("queues are for admins", async () => {
    await refused(user.pauseQueue("default"), "forbidden", 403);
    assert.equal((await admin.pauseQueue("js-queue")).paused, true);
    assert.equal((await admin.resumeQueue("js-queue")).paused, false);
  });

  test("stream tokens: made with a key, refused from a token", async () => {
    const job = await user.submit("add", { a: 1 });
    const made = await user.streamToken({ job: job.id, ttl: 30 });
    assert.match(made.token, /^uwt\./);
    assert.ok(Date.parse(made.expires_at) > Date.now());
    const reader = createClient({ baseUrl: server.baseUrl, token: made.token });
    assert.equal((await reader.get(job.id)).id, job.id);
    assert.ok((await reader.events(job.id, { after: 0 })).events.length >= 1);
    await refused(reader.streamToken({}), "forbidden", 403);
    await refused(reader.submit("add", { a: 1 }), "forbidden", 403);
  });

  test("a signed-in browser's changes carry the session's CSRF token", async () => {
    const signed = await fetch(`${server.baseUrl}/session`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: server.key("grace", "user") }),
    });
    assert.equal(signed.status, 200);
    const { csrf_token: csrfToken } = await signed.json();
    const cookie = String(signed.headers.get("set-cookie")).split(";")[0];
    assert.match(cookie, /^underway_session=uws\./);
    /** A browser's fetch: it sends the cookie by itself. @type {typeof fetch} */
    const withCookie = (url, init = {}) =>
      fetch(url, { ...init, headers: { ...(/** @type {any} */ (init.headers) ?? {}), Cookie: cookie } });
    const browser = createClient({ baseUrl: server.baseUrl, fetch: withCookie, csrfToken });
    const job = await browser.submit("hold", { release: server.path("csrf-release") });
    assert.equal(job.owner, "grace");
    const forged = createClient({ baseUrl: server.baseUrl, fetch: withCookie });
    const error = await refused(forged.cancel(job.id), "forbidden", 403);
    assert.deepEqual(error.details, { reason: "csrf" });
    const cancelled = await createClient({ baseUrl: server.baseUrl, fetch: withCookie, csrfToken: () => csrfToken })
      .cancel(job.id);
    assert.equal(cancelled.id, job.id);
  });

  test("reading the service: batches, items, queues, tasks, workers, stats, me", async () => {
    const batch = await user.submitBatch("add", [{ a: 1 }, { a: 2 }], { name: "js-read" });
    const batches = await user.listBatches({ limit: 50 });
    assert.ok(batches.batches.some((/** @type {any} */ b) => b.id === batch.id));
    const items = await user.batchItems(batch.id, { limit: 1 });
    assert.equal(items.jobs.length, 1);
    assert.equal((await user.batchItems(batch.id, { cursor: items.next_cursor })).jobs.length, 1);
    assert.ok((await user.tasks()).tasks.some((/** @type {any} */ t) => t.name === "add" && t.schema));
    assert.ok(Array.isArray((await admin.queues()).queues));
    assert.equal((await admin.limitQueue("js-limit", 3)).concurrency, 3);
    assert.equal((await admin.limitQueue("js-limit", null)).concurrency, null);
    await refused(user.limitQueue("js-limit", 3), "forbidden", 403);
    assert.ok(Array.isArray((await admin.workers()).workers));
    const stats = await user.stats("15m");
    assert.equal(stats.window_s, 900);
    assert.equal(stats.buckets.length, stats.finished.succeeded.length);
    const me = await user.me();
    assert.deepEqual([me.owner, me.role, me.auth, me.via], ["ada", "user", true, "key"]);
    const done = await until((await user.submit("add", { a: 1 })).id, (j) => j.status === "succeeded");
    assert.equal(await user.remove(done.id), null);
    await refused(user.get(done.id), "job_not_found", 404);
  });

  test("signIn and signOut: a session cookie for an API key", async () => {
    /** @type {string[]} */
    const jar = [];
    /** A browser's fetch: keeps the cookie and sends it. @type {typeof fetch} */
    const browserFetch = async (url, init = {}) => {
      const headers = { ...(/** @type {any} */ (init.headers) ?? {}), ...(jar.length ? { Cookie: jar[0] } : {}) };
      const response = await fetch(url, { ...init, headers });
      const set = response.headers.get("set-cookie");
      if (set) jar.splice(0, jar.length, set.split(";")[0]);
      return response;
    };
    /** @type {string|undefined} */
    let csrf;
    const browser = createClient({ baseUrl: server.baseUrl, fetch: browserFetch, csrfToken: () => csrf });
    await refused(browser.me(), "unauthenticated", 401);
    await refused(browser.signIn("uw_000000000000_wrong"), "unauthenticated", 401);
    const session = await browser.signIn(server.key("lin", "user"));
    csrf = session.csrf_token;
    assert.deepEqual([session.owner, session.role], ["lin", "user"]);
    const me = await browser.me();
    assert.deepEqual([me.owner, me.via, me.csrf_token], ["lin", "session", csrf]);
    assert.equal((await browser.submit("add", { a: 1 })).owner, "lin");
    assert.equal(await browser.signOut(), null);
    await refused(browser.me(), "unauthenticated", 401);
  });

  test("errors carry underway's code, status and details", async () => {
    await refused(user.get("nope"), "job_not_found", 404);
    await refused(user.getBatch("nope"), "batch_not_found", 404);
    await refused(user.submit("no-such-task", {}), "unknown_task", 422);
    const invalid = await refused(user.submit("add", { a: "one" }), "invalid_arguments", 422);
    assert.ok(invalid.details);
    await refused(user.list({ owner: "root" }), "forbidden", 403);
    const anonymous = createClient({ baseUrl: server.baseUrl });
    await refused(anonymous.list(), "unauthenticated", 401);
    const nowhere = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}/api` });
    await refused(nowhere.list(), "unreachable", 0);
    assert.throws(() => createClient({ baseUrl: "/api" }), { code: "invalid_options" });
  });

  test("the same helpers as functions taking the options last", async () => {
    const opts = { baseUrl: server.baseUrl, token: server.key("ada", "user") };
    const job = await underway.submit("add", { a: 20, b: 22 }, {}, opts);
    assert.equal((await underway.get(job.id, opts)).id, job.id);
    assert.ok((await underway.list({ task: "add" }, opts)).jobs.length >= 1);
    const queued = await underway.submit("add", { a: 1 }, { delay: 60 }, opts);
    assert.equal((await underway.cancel(queued.id, opts)).status, "cancelled");
    assert.equal((await underway.streamToken({ job: job.id }, opts)).token.slice(0, 4), "uwt.");
    for (const name of [
      "submitBatch",
      "cancelAll",
      "retryAll",
      "answer",
      "retry",
      "retryFailed",
      "pauseBatch",
      "resumeBatch",
      "pauseQueue",
      "resumeQueue",
      "streamToken",
    ]) {
      assert.equal(typeof (/** @type {any} */ (underway)[name]), "function", name);
    }
  });
});
