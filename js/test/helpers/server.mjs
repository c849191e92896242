// Real underway servers for the tests: `python -m underway ... dev` (the API and a worker in one
// process) on a SQLite file, with the test tasks of tests/js/js_tasks.py. The Python comes from
// UNDERWAY_PYTHON (default ../.venv/bin/python, relative to js/).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const JS = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const ROOT = resolve(JS, "..");
export const PYTHON = process.env.UNDERWAY_PYTHON || join(JS, "../.venv/bin/python");
const TASKS = join(ROOT, "tests/js");

/** A port nobody listens on now. */
export async function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => done(port));
    });
  });
}

function environment() {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("UNDERWAY_")),
  );
  env.PYTHONPATH = [TASKS, process.env.PYTHONPATH].filter(Boolean).join(":");
  env.PYTHONUNBUFFERED = "1";
  env.NO_COLOR = "1";
  return env;
}

/**
 * Poll `predicate` every `interval` ms until it returns something truthy; fail after `timeout` ms.
 * @template T @param {() => T | Promise<T>} predicate @param {{timeout?: number, what?: string, interval?: number}} [options]
 * @returns {Promise<T>}
 */
export async function waitFor(predicate, { timeout = 10000, what = "a condition", interval = 10 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((done) => setTimeout(done, interval));
  }
}

/** A scratch directory, removed by `cleanup()`. */
export function scratch() {
  const dir = mkdtempSync(join(tmpdir(), "underway-js-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * An underway server (and worker) on a fresh SQLite file in a scratch folder (or `dir`), or
 * on the store at `url` (a PostgreSQL schema, say).
 * @param {{args?: string[], port?: number, dir?: string, url?: string}} [options]
 */
export async function startServer({ args = [], port, dir, url } = {}) {
  const own = dir ? null : scratch();
  const where = dir ?? /** @type {{dir: string}} */ (own).dir;
  const server = new UnderwayServer(where, port ?? (await freePort()), args, own, url);
  await server.start();
  return server;
}

/**
 * The stores the suites that matter on both run against: SQLite, and PostgreSQL when
 * `UNDERWAY_JS_POSTGRES_URL` names a fresh schema (the pytest bridge makes one). Under
 * `CI=true` it must: CI does not pass by leaving PostgreSQL out.
 * @returns {[string, string|undefined][]}
 */
export function stores() {
  const postgres = process.env.UNDERWAY_JS_POSTGRES_URL;
  if (!postgres && process.env.CI === "true") {
    throw new Error("UNDERWAY_JS_POSTGRES_URL is required under CI=true (run through tests/js/test_js.py)");
  }
  return postgres ? [["sqlite", undefined], ["postgres", postgres]] : [["sqlite", undefined]];
}

export class UnderwayServer {
  /**
   * @param {string} dir @param {number} port @param {string[]} args @param {{cleanup(): void}|null} own
   * @param {string} [url] the store (default: x.db in `dir`)
   */
  constructor(dir, port, args, own, url) {
    this.dir = dir;
    this.port = port;
    this.args = args;
    this.own = own;
    this.url = url ?? `sqlite:///${join(dir, "x.db")}`;
    this.origin = `http://127.0.0.1:${port}`;
    this.baseUrl = `${this.origin}/api`;
    /** @type {import("node:child_process").ChildProcess|null} */
    this.process = null;
    this.output = "";
  }

  async start() {
    const command = ["-m", "underway", "--url", this.url, "--app", "js_tasks:app", "dev"];
    command.push("--host", "127.0.0.1", "--port", String(this.port), ...this.args);
    const child = spawn(PYTHON, command, { env: environment(), stdio: ["ignore", "pipe", "pipe"] });
    this.process = child;
    child.stdout?.on("data", (chunk) => (this.output += chunk));
    child.stderr?.on("data", (chunk) => (this.output += chunk));
    let exited = false;
    child.on("exit", () => (exited = true));
    await waitFor(
      async () => {
        if (exited) throw new Error(`the server exited at start:\n${this.output}`);
        try {
          return (await fetch(`${this.baseUrl}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      { timeout: 20000, what: `the server on port ${this.port}`, interval: 25 },
    );
  }

  /** End it at once, as a crash would (SIGKILL), and wait until it is gone. */
  async kill() {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((done) => child.once("exit", done));
    child.kill("SIGKILL");
    await gone;
  }

  /** Stop it as an operator does (SIGTERM: streams end cleanly), and wait until it is gone. */
  async terminate() {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((done) => child.once("exit", done));
    child.kill("SIGTERM");
    await gone;
  }

  /** Start it again on the same port and store. */
  async restart() {
    await this.kill();
    await this.start();
  }

  async stop() {
    await this.kill();
    this.own?.cleanup();
  }

  /**
   * `underway keys create`: an API key.
   * @param {string} owner @param {"user"|"admin"} role @returns {string}
   */
  key(owner, role = "user") {
    const made = spawnSync(
      PYTHON,
      ["-m", "underway", "--url", this.url, "keys", "create", "--owner", owner, "--role", role, "--json"],
      {
        env: environment(),
        encoding: "utf8",
      },
    );
    if (made.status !== 0) throw new Error(`keys create failed: ${made.stderr}`);
    return JSON.parse(made.stdout).key;
  }

  /** A path in the server's directory (the tasks' release files). */
  /** @param {string} name */
  path(name) {
    return join(this.dir, name);
  }

  /** @param {string} name */
  release(name) {
    writeFileSync(this.path(name), "");
  }

  /**
   * Every event of a job, from the store (`GET /jobs/{id}/events`).
   * @param {string} id @param {string} [key]
   */
  async events(id, key) {
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const answer = await fetch(`${this.baseUrl}/jobs/${id}/events?after=0&limit=10000`, { headers });
    if (!answer.ok) throw new Error(`events of ${id}: HTTP ${answer.status}`);
    return (await answer.json()).events;
  }

  /** The number of open streams by transport (`/metrics`, admins: a server with auth off). */
  async openStreams() {
    const text = await (await fetch(`${this.baseUrl}/metrics`)).text();
    /** @type {Record<string, number>} */
    const open = {};
    for (const match of text.matchAll(/^underway_open_streams\{transport="([^"]+)"\} ([0-9.]+)$/gm)) {
      open[match[1]] = Number(match[2]);
    }
    return open;
  }
}

/**
 * A `fetch` that records the requests whose URL contains `part` (all by default).
 * @param {string} [part]
 */
export function countingFetch(part = "") {
  /** @type {{url: string, at: number, status?: number}[]} */
  const calls = [];
  /** @type {typeof fetch} */
  const counted = async (input, init) => {
    const url = String(input);
    const call = part && !url.includes(part) ? null : { url, at: Date.now() };
    if (call) calls.push(call);
    const response = await fetch(input, init);
    if (call) call.status = response.status;
    return response;
  };
  return { fetch: counted, calls };
}

/** Callbacks that record what a watch reports. */
export function recorder() {
  const seen = {
    /** @type {any[]} */ events: [],
    /** @type {any[]} */ ends: [],
    /** @type {any[]} */ errors: [],
    /** @type {boolean[]} */ connections: [],
    /** @type {any} */ job: null,
    /** @type {any} */ jobs: null,
    /** @type {any[]} */ batches: [],
  };
  const callbacks = {
    onEvent: (/** @type {any} */ event) => seen.events.push(event),
    onEnd: (/** @type {any} */ info) => seen.ends.push(info),
    onError: (/** @type {any} */ error) => seen.errors.push(error),
    onConnection: (/** @type {boolean} */ connected) => seen.connections.push(connected),
    onJob: (/** @type {any} */ state) => (seen.job = state),
    onJobs: (/** @type {any} */ states) => (seen.jobs = states),
    onBatch: (/** @type {any} */ batch, /** @type {any[]} */ items) => seen.batches.push({ batch, items }),
  };
  return { seen, callbacks };
}

/** @param {any[]} events */
export const seqs = (events) => events.map((event) => event.seq);

/**
 * An HTTP proxy in front of `origin` that misbehaves with event streams, as some proxies do:
 * - "buffer": sends their headers, holds their body back;
 * - "hold": sends nothing at all;
 * - "cut-and-replay": cuts the first stream after three events, and drops the query string
 *   (`?after=`) of the later ones, so the server replays them from the start.
 * Everything else passes through. `paths` lists what was asked.
 * @param {string} origin @param {"buffer"|"hold"|"cut-and-replay"} mode
 */
export async function misbehavingProxy(origin, mode) {
  /** @type {string[]} */
  const paths = [];
  let streams = 0;
  const proxy = createHttpServer((incoming, outgoing) => {
    const asked = /** @type {string} */ (incoming.url);
    paths.push(asked);
    const nth = asked.includes("/stream") ? ++streams : 0;
    const path = mode === "cut-and-replay" && nth > 1 ? asked.split("?")[0] : asked;
    const upstream = httpRequest(
      `${origin}${path}`,
      { method: incoming.method, headers: incoming.headers },
      (answer) => {
        const sse = String(answer.headers["content-type"]).startsWith("text/event-stream");
        if (!sse || mode === "cut-and-replay") {
          outgoing.writeHead(/** @type {number} */ (answer.statusCode), answer.headers);
          if (!sse || nth > 1) return answer.pipe(outgoing);
          return cutAfterThreeEvents(answer, outgoing);
        }
        if (mode === "buffer") {
          outgoing.writeHead(200, answer.headers);
          outgoing.flushHeaders();
        }
        answer.on("data", () => {}); // held back, as a buffering proxy does
      },
    );
    upstream.on("error", () => outgoing.destroy());
    outgoing.on("close", () => upstream.destroy());
    incoming.pipe(upstream);
  });
  await new Promise((done) => proxy.listen(0, "127.0.0.1", () => done(null)));
  const { port } = /** @type {import("node:net").AddressInfo} */ (proxy.address());
  return {
    baseUrl: `http://127.0.0.1:${port}/api`,
    paths,
    close: () => {
      proxy.closeAllConnections();
      proxy.close();
    },
  };
}

/**
 * Pass whole SSE frames until three events with an id went through, then end the response.
 * @param {import("node:http").IncomingMessage} answer @param {import("node:http").ServerResponse} outgoing
 */
function cutAfterThreeEvents(answer, outgoing) {
  let events = 0;
  let buffered = "";
  answer.on("data", (/** @type {Buffer} */ chunk) => {
    buffered += chunk.toString();
    for (let end = buffered.indexOf("\n\n"); end >= 0 && events < 3; end = buffered.indexOf("\n\n")) {
      const frame = buffered.slice(0, end + 2);
      buffered = buffered.slice(end + 2);
      outgoing.write(frame);
      if (/^id: /m.test(frame)) events += 1;
    }
    if (events >= 3) {
      answer.destroy();
      outgoing.end();
    }
  });
}
