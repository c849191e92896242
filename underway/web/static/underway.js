// @ts-check
/**
 * underway.js: watch underway jobs live from a browser or Node 20, and call its HTTP API.
 *
 * One ES module, no dependencies. Streams are read over `fetch` (so 401, 204 and 429 can be told
 * apart), over one shared WebSocket, or by long polling; every transport delivers the same
 * events in the same order, resumes where it stopped after a disconnect (nothing missed or
 * repeated: events are deduplicated by `seq`), backs off with jitter, and refreshes a stream
 * token once, shared by every stream of the page that uses the same token function.
 *
 *   import { watchJob, submit } from "/assets/underway.js";
 *   const job = await submit("report", { sections: 5 });
 *   const watch = watchJob(job.id, { onJob: (state) => render(state), onEnd: () => done() });
 *
 * Wire formats: docs/http.md (routes, SSE, WebSocket), docs/events.md (events), docs/security.md
 * (stream tokens). The sections below: errors and HTTP; tokens; the job state; the SSE parser;
 * delivery; transports (SSE, long polling, WebSocket); watches; REST helpers; shared stores;
 * the React hooks factory.
 */

export const VERSION = "0.1.0";

/** @typedef {"queued"|"running"|"waiting"|"succeeded"|"failed"|"cancelled"} JobStatus */
/** @typedef {{seq: number, job_id: string, type: string, at: string, data: any}} JobEvent */
/**
 * @typedef {{current: number|null, total: number|null, percent: number|null, rate: number|null,
 *   eta_s: number|null, message: string|null, step: number|null, steps: number|null}} Progress
 */
/**
 * The state of a job folded from its events (`foldJob`) or read from its JSON (`jobState`).
 * @typedef {{id: string, status: JobStatus|null, attempt: number, progress: Progress|null,
 *   message: string|null, step: number|null, prompt: any, result: any, error: any,
 *   cancelRequested: boolean, lastSeq: number, ended: boolean}} JobState
 */
/** @typedef {string | (() => (string | Promise<string>))} TokenOption */
/**
 * @typedef {object} WatchOptions
 * @property {string} [baseUrl] where the API is mounted (default "/api"; absolute under Node)
 * @property {TokenOption} [token] a stream token or API key, or a function returning a stream token
 * @property {number} [after] (watchJob) resume after this seq
 * @property {"sse"|"ws"|"poll"} [transport] default "sse"
 * @property {(event: JobEvent) => void} [onEvent]
 * @property {(state: JobState) => void} [onJob]
 * @property {(states: Record<string, JobState>) => void} [onJobs]
 * @property {(batch: any, changedItems: any[]) => void} [onBatch]
 * @property {(info: any) => void} [onEnd]
 * @property {(error: UnderwayError) => void} [onError]
 * @property {(connected: boolean) => void} [onConnection]
 * @property {typeof fetch} [fetch]
 * @property {any} [EventSource]
 * @property {any} [WebSocket]
 * @property {"fetch"|"eventsource"} [sseClient] how to read SSE (default: fetch when it streams)
 * @property {RequestCredentials} [credentials] fetch credentials (default "same-origin")
 * @property {number} [retryDelay] first backoff delay in ms (default 1000)
 * @property {number} [maxRetryDelay] longest backoff delay in ms (default 30000)
 * @property {number} [stallTimeout] ms without a byte on an open stream before it is dropped (default 20000)
 * @property {number} [fallbackAfter] stream failures in a row before long polling (default 3)
 * @property {number} [pollWait] seconds a long poll waits (default 25)
 * @property {number} [pollInterval] ms between polls of watchJobs/watchBatch with transport "poll" (default 2000)
 * @property {boolean} [pauseWhenHidden] pause in a hidden tab, catch up on return (default true)
 * @property {AbortSignal} [signal] closes the watch when aborted
 */

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const BATCH_TERMINAL = new Set(["completed", "partial", "failed", "cancelled"]);
const EVENT_TYPES = new Set(["status", "progress", "log", "prompt", "answer"]);
/** The status of the HTTP answer that goes with an error code (for WebSocket error replies). */
const CODE_STATUS = {
  unauthenticated: 401,
  forbidden: 403,
  job_not_found: 404,
  batch_not_found: 404,
  not_found: 404,
  invalid_state: 409,
  idempotency_conflict: 409,
  invalid_request: 422,
  invalid_arguments: 422,
  unknown_task: 422,
  too_many_requests: 429,
};

// -- errors and HTTP ------------------------------------------------------------------------------

/** An error of underway's API (`code` as in docs/http.md#errors), or of this client. */
export class UnderwayError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, status?: number, details?: any, retryAfter?: number|null,
   *   fatal?: boolean, cause?: unknown}} [init]
   */
  constructor(message, init = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "UnderwayError";
    /** underway's error code, or this client's: "unreachable", "bad_response", "token_failed"… */
    this.code = init.code ?? "error";
    /** the HTTP status (0 when no answer came) */
    this.status = init.status ?? 0;
    this.details = init.details ?? null;
    /** seconds, from `Retry-After` */
    this.retryAfter = init.retryAfter ?? null;
    /** true when the watch that reported it stopped because of it */
    this.fatal = init.fatal ?? false;
  }
}

/** @param {Response} response */
async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && typeof body === "object" ? body.error : null;
  const retryAfter = Number.parseFloat(response.headers.get("retry-after") ?? "");
  return new UnderwayError(error?.message ?? `HTTP ${response.status} ${response.statusText}`.trim(), {
    code: error?.code ?? `http_${response.status}`,
    status: response.status,
    details: error?.details ?? null,
    retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
  });
}

/** @param {unknown} cause */
function unreachable(cause) {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new UnderwayError(`the server could not be reached: ${reason}`, { code: "unreachable", cause });
}

/** @param {unknown} error */
function isAbort(error) {
  return error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError");
}

/** @param {string|undefined} baseUrl */
function cleanBase(baseUrl) {
  const base = (baseUrl ?? "/api").replace(/\/+$/, "");
  if (/^[a-z][a-z0-9+.-]*:/i.test(base)) return base;
  const page = typeof location === "undefined" ? undefined : location.href;
  if (page === undefined) {
    throw new UnderwayError(
      `baseUrl ${JSON.stringify(base)} is relative: outside a browser give an absolute URL`,
      {
        code: "invalid_options",
      },
    );
  }
  return base;
}

/**
 * @param {string} base
 * @param {string} path
 * @param {Record<string, any>} [query] arrays repeat the parameter; null/undefined are left out
 */
function urlOf(base, path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value === undefined || value === null) continue;
    for (const one of Array.isArray(value) ? value : [value]) params.append(name, String(one));
  }
  const text = params.toString();
  return `${base}${path}${text ? `?${text}` : ""}`;
}

/** @param {string} id */
const seg = (id) => encodeURIComponent(id);

/** @param {WatchOptions} options */
function fetchOf(options) {
  const found = options.fetch ?? globalThis.fetch;
  if (typeof found !== "function") {
    throw new UnderwayError("no fetch: pass one as the fetch option", { code: "invalid_options" });
  }
  return options.fetch ? found : found.bind(globalThis);
}

/**
 * @param {number} ms
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>}
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Exponential backoff with jitter: between half and all of `base × 2^(failures-1)`, at most `max`.
 * @param {number} failures @param {number} base @param {number} max
 */
export function backoffDelay(failures, base = 1000, max = 30000) {
  const ceiling = Math.min(max, base * 2 ** Math.max(0, failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

// -- tokens -----------------------------------------------------------------------------------------

/** One token function's current token, fetched once however many streams ask at the same time. */
class SharedToken {
  /** @param {() => (string|Promise<string>)} fn */
  constructor(fn) {
    this.fn = fn;
    /** @type {string|undefined} */
    this.value = undefined;
    /** @type {Promise<string>|null} */
    this.pending = null;
  }

  /** @returns {Promise<string>} */
  current() {
    if (this.pending) return this.pending;
    if (this.value !== undefined) return Promise.resolve(this.value);
    return this.call();
  }

  /** A token other than `stale`: the one another stream got already, or a new call's. */
  /** @param {string|null} stale @returns {Promise<string>} */
  refresh(stale) {
    if (this.pending) return this.pending;
    if (this.value !== undefined && this.value !== stale) return Promise.resolve(this.value);
    return this.call();
  }

  call() {
    // cleared asynchronously, even when the function throws at once
    const pending = this.ask().finally(() => {
      if (this.pending === pending) this.pending = null;
    });
    this.pending = pending;
    return pending;
  }

  async ask() {
    let value;
    try {
      value = await this.fn();
    } catch (error) {
      if (error instanceof UnderwayError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new UnderwayError(`the token function failed: ${reason}`, { code: "token_failed", cause: error });
    }
    if (typeof value !== "string" || value === "") {
      throw new UnderwayError("the token function returned no token (a string)", { code: "token_failed" });
    }
    this.value = value;
    return value;
  }
}

/** @type {WeakMap<Function, SharedToken>} */
const sharedTokens = new WeakMap();

/** @param {() => (string|Promise<string>)} fn */
function sharedToken(fn) {
  let shared = sharedTokens.get(fn);
  if (!shared) {
    shared = new SharedToken(fn);
    sharedTokens.set(fn, shared);
  }
  return shared;
}

/** The token of a watch or client, read from its current options each time (never cached here). */
class Tokens {
  /** @param {() => (TokenOption|null|undefined)} get */
  constructor(get) {
    this.get = get;
  }

  get refreshable() {
    return typeof this.get() === "function";
  }

  /** @returns {Promise<string|null>} */
  async current() {
    const token = this.get();
    return typeof token === "function" ? sharedToken(token).current() : (token ?? null);
  }

  /** @param {string|null} stale @returns {Promise<string|null>} */
  async refresh(stale) {
    const token = this.get();
    return typeof token === "function" ? sharedToken(token).refresh(stale) : (token ?? null);
  }
}

// -- the job state ------------------------------------------------------------------------------------

/** @param {any} data @returns {Progress|null} */
function progressOf(data) {
  if (!data || typeof data !== "object") return null;
  /** @param {string} key */
  const pick = (key) => (data[key] === undefined ? null : data[key]);
  return {
    current: pick("current"),
    total: pick("total"),
    percent: pick("percent"),
    rate: pick("rate"),
    eta_s: pick("eta_s"),
    message: pick("message"),
    step: pick("step"),
    steps: pick("steps"),
  };
}

/** @param {string} id @returns {JobState} */
function emptyState(id) {
  return {
    id,
    status: null,
    attempt: 0,
    progress: null,
    message: null,
    step: null,
    prompt: null,
    result: null,
    error: null,
    cancelRequested: false,
    lastSeq: 0,
    ended: false,
  };
}

/**
 * The state of a job from its JSON (`GET /jobs/{id}`, a snapshot). `message` and `step` are
 * those of its latest progress.
 * @param {any} job @returns {JobState}
 */
export function jobState(job) {
  const progress = progressOf(job.progress);
  return {
    id: job.id,
    status: job.status ?? null,
    attempt: job.attempt ?? 0,
    progress,
    message: progress?.message ?? null,
    step: progress?.step ?? null,
    prompt: job.prompt ?? null,
    result: job.result ?? null,
    error: job.error ?? null,
    cancelRequested: Boolean(job.cancel_requested),
    lastSeq: job.last_seq ?? 0,
    ended: TERMINAL.has(job.status),
  };
}

/**
 * The state after one more event (pure: `state` is not changed). An event at or before
 * `state.lastSeq` is already in it: the same state comes back. `state` may be null.
 * @param {JobState|null|undefined} state @param {JobEvent} event @returns {JobState}
 */
export function foldJob(state, event) {
  const before = state ?? emptyState(event.job_id);
  if (event.seq <= before.lastSeq) return before;
  const next = { ...before, id: before.id || event.job_id, lastSeq: event.seq };
  const data = event.data ?? {};
  if (event.type === "status") foldStatus(before, next, data);
  else if (event.type === "progress") {
    next.progress = progressOf(data);
    next.message = next.progress?.message ?? null;
    next.step = next.progress?.step ?? null;
  } else if (event.type === "prompt") next.prompt = data;
  else if (event.type === "answer") next.prompt = null;
  return next;
}

/** @param {JobState} before @param {JobState} next @param {any} data */
function foldStatus(before, next, data) {
  next.status = data.status;
  next.attempt = data.attempt ?? before.attempt;
  next.ended = TERMINAL.has(data.status);
  if (data.status === "queued" && before.ended) {
    // a manual retry: the job starts over (its events go on)
    Object.assign(next, { result: null, error: null, prompt: null, cancelRequested: false });
  }
  if (data.status !== "waiting") next.prompt = null;
  if (data.cancel_requested) next.cancelRequested = true;
  if ("result" in data) next.result = data.result;
  if ("error" in data) next.error = data.error;
  else if (data.status === "succeeded") next.error = null;
}

// -- Server-Sent Events ---------------------------------------------------------------------------------

/** A small parser of the WHATWG event-stream format: feed it text, it calls back per event. */
export class SseParser {
  /** @param {(event: {event: string, data: string, id: string|null}) => void} onEvent */
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    /** @type {string[]} */
    this.data = [];
    this.event = "";
    /** @type {string|null} */
    this.id = null;
    this.started = false;
    /** events dispatched so far */
    this.events = 0;
  }

  /** @param {string} text */
  feed(text) {
    let buffer = this.buffer + text;
    if (!this.started && buffer.length > 0) {
      this.started = true;
      if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
    }
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const c = buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      if (c === "\r" && i + 1 === buffer.length) break; // a LF may follow in the next chunk
      this.line(buffer.slice(start, i));
      if (c === "\r" && buffer[i + 1] === "\n") i++;
      start = i + 1;
    }
    this.buffer = buffer.slice(start);
  }

  /** @param {string} line */
  line(line) {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return; // a comment: the server's ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }

  dispatch() {
    const event = this.event || "message";
    this.event = "";
    if (this.data.length === 0) return;
    const data = this.data.join("\n");
    this.data = [];
    this.events += 1;
    this.onEvent({ event, data, id: this.id });
  }
}

// -- delivery: at most once per animation frame in a browser, at once under Node -------------------

const inBrowser = () => typeof document !== "undefined" && typeof requestAnimationFrame === "function";

/** @param {unknown} error */
function report(error) {
  const sink = /** @type {any} */ (globalThis).reportError;
  if (typeof sink === "function") sink(error);
  else console.error(error);
}

class Delivery {
  /** @param {() => WatchOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {Array<[string, any[]]>} callbacks in order (events, errors) */
    this.queue = [];
    /** @type {Map<string, any[]>} callbacks of which only the latest call matters */
    this.latest = new Map();
    /** @type {any[]|null} */
    this.end = null;
    this.scheduled = false;
    this.cancelled = false;
    /** @type {boolean|null} */
    this.connectedShown = null;
  }

  /** @param {string} name @param {any[]} args */
  push(name, ...args) {
    this.queue.push([name, args]);
    this.schedule();
  }

  /** @param {string} name @param {any[]} args */
  replace(name, ...args) {
    this.latest.set(name, args);
    this.schedule();
  }

  /** @param {any} info */
  finish(info) {
    this.end = [info];
    this.schedule();
  }

  schedule() {
    if (this.cancelled) return;
    if (!inBrowser()) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    const run = () => this.flush();
    if (document.visibilityState === "hidden") setTimeout(run, 0);
    else requestAnimationFrame(run);
  }

  flush() {
    this.scheduled = false;
    if (this.cancelled) return;
    const queue = this.queue;
    const latest = this.latest;
    const end = this.end;
    this.queue = [];
    this.latest = new Map();
    this.end = null;
    for (const [name, args] of queue) this.call(name, args);
    for (const [name, args] of latest) {
      if (name === "onConnection") {
        if (args[0] === this.connectedShown) continue;
        this.connectedShown = args[0];
      }
      this.call(name, args);
    }
    if (end) this.call("onEnd", end);
  }

  /** @param {string} name @param {any[]} args */
  call(name, args) {
    const callback = /** @type {any} */ (this.options())[name];
    if (typeof callback !== "function") return;
    try {
      callback(...args);
    } catch (error) {
      report(error);
    }
  }
}

// -- pausing in hidden tabs ---------------------------------------------------------------------------

/** @type {Set<Watch>} */
const visibleWatches = new Set();
let visibilityListening = false;

/** @param {Watch} watch */
function followVisibility(watch) {
  if (typeof document === "undefined" || typeof document.addEventListener !== "function") return;
  visibleWatches.add(watch);
  if (visibilityListening) return;
  visibilityListening = true;
  document.addEventListener("visibilitychange", () => {
    const hidden = document.visibilityState === "hidden";
    for (const one of [...visibleWatches]) one.setHidden(hidden);
  });
}

// -- transports ----------------------------------------------------------------------------------------

/**
 * What one attempt of a transport came to.
 * @typedef {{kind: "end", info?: any} | {kind: "stopped"} | {kind: "expired", token: string|null}
 *   | {kind: "unauthorized", token: string|null, error: UnderwayError}
 *   | {kind: "fatal", error: UnderwayError}
 *   | {kind: "retry", error?: UnderwayError, delay?: number, streamFailure?: boolean}} Outcome
 */

/**
 * Whether a connection refused for its token (or whose token expired) may open again at once,
 * with the new token: once a second at most, so that tokens refused over and over (a token
 * function that hands out bad or spent ones) meet the backoff instead of a tight loop.
 * @param {{reopened: number}} transport
 */
function reopenNow(transport) {
  const now = Date.now();
  if (now - transport.reopened < 1000) return false;
  transport.reopened = now;
  return true;
}

/** @param {UnderwayError} error @param {string|null} token @returns {Outcome} */
function outcomeOf(error, token) {
  const status = error.status;
  if (status === 401) return { kind: "unauthorized", token, error };
  if (status === 429 || status === 503) {
    return { kind: "retry", error, delay: error.retryAfter === null ? undefined : error.retryAfter * 1000 };
  }
  if (status >= 500 || status === 408) return { kind: "retry", error, streamFailure: true };
  return { kind: "fatal", error };
}

/** @param {unknown} error */
function asUnderwayError(error) {
  return error instanceof UnderwayError ? error : unreachable(error);
}

/**
 * The SSE-over-fetch, long-poll and snapshot-poll transports: attempts in a loop. An attempt
 * ends with an outcome: the end, a fatal error, an expired or refused token (refreshed, then
 * reopened at once; a second refusal in a row backs off first), or a failure (backoff).
 */
class Looping {
  /** @param {Watch} watch */
  constructor(watch) {
    this.watch = watch;
    /** @type {AbortController|null} */
    this.controller = null;
    /** when it last reopened at once with a new token (once a second at most; then it backs off) */
    this.reopened = 0;
  }

  start() {
    if (this.controller) return;
    const controller = new AbortController();
    this.controller = controller;
    this.loop(controller.signal).catch(report);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
  }

  /** The connection answered: the backoff starts over. */
  opened() {
    this.watch.failures = 0;
    this.watch.setConnected(true);
  }

  /** @param {AbortSignal} signal @returns {Promise<Outcome>} */
  async attempt(signal) {
    return { kind: "stopped" };
  }

  /** @param {AbortSignal} signal */
  async loop(signal) {
    const watch = this.watch;
    while (!signal.aborted) {
      /** @type {Outcome} */
      let outcome;
      try {
        outcome = await this.attempt(signal);
      } catch (error) {
        outcome =
          isAbort(error) || signal.aborted
            ? { kind: "stopped" }
            : { kind: "retry", error: asUnderwayError(error) };
      }
      if (signal.aborted || outcome.kind === "stopped") return;
      if (outcome.kind === "end") return watch.finish(outcome.info);
      if (outcome.kind === "fatal") return watch.fail(outcome.error, true);
      watch.setConnected(false);
      if (outcome.kind === "expired" || outcome.kind === "unauthorized") {
        if (!watch.tokens.refreshable && outcome.kind === "unauthorized")
          return watch.fail(outcome.error, true);
        try {
          await watch.tokens.refresh(outcome.token);
          if (reopenNow(this)) continue;
          outcome = { kind: "retry", error: outcome.kind === "unauthorized" ? outcome.error : undefined };
        } catch (error) {
          outcome = { kind: "retry", error: asUnderwayError(error) };
        }
      }
      if (await this.backOff(outcome, signal)) return;
    }
  }

  /**
   * Report a failure and wait before the next attempt; true when long polling takes over.
   * @param {{error?: UnderwayError, delay?: number, streamFailure?: boolean}} failure @param {AbortSignal} signal
   */
  async backOff(failure, signal) {
    const watch = this.watch;
    if (failure.error && failure.error.code !== "unreachable") watch.fail(failure.error, false);
    if (failure.streamFailure && this.canFallBack()) {
      watch.streamFailures += 1;
      if (watch.streamFailures >= watch.fallbackAfter) {
        queueMicrotask(() => watch.fallBack());
        return true;
      }
    }
    watch.failures += 1;
    await sleep(failure.delay ?? backoffDelay(watch.failures, watch.retryDelay, watch.maxRetryDelay), signal);
    return false;
  }

  canFallBack() {
    return false;
  }
}

/** SSE read with `fetch` and parsed here: statuses are visible, and so is a proxy that buffers. */
class FetchSse extends Looping {
  canFallBack() {
    return true;
  }

  /** @param {AbortSignal} outer @returns {Promise<Outcome>} */
  async attempt(outer) {
    const watch = this.watch;
    const token = await watch.tokens.current();
    const controller = new AbortController();
    const abort = () => controller.abort();
    outer.addEventListener("abort", abort, { once: true });
    let stalled = false; // no answer at all within stallTimeout: held up on the way, as a stall
    const timer = setTimeout(() => ((stalled = true), controller.abort()), watch.stallTimeout);
    try {
      /** @type {Response} */
      let response;
      try {
        response = await watch.fetch(watch.streamUrl(), {
          headers: authorized({ Accept: "text/event-stream" }, token),
          signal: controller.signal,
          cache: "no-store",
          credentials: watch.credentials,
        });
      } catch (error) {
        if (outer.aborted) return { kind: "stopped" };
        if (stalled) return { kind: "retry", streamFailure: true, error: stall(watch.stallTimeout) };
        return { kind: "retry", error: unreachable(error) };
      } finally {
        clearTimeout(timer);
      }
      if (response.status === 204) return { kind: "end" };
      if (response.status !== 200) return outcomeOf(await errorFrom(response), token);
      const type = response.headers.get("content-type") ?? "";
      if (!type.startsWith("text/event-stream") || !response.body) {
        const error = new UnderwayError(`expected an event stream, got ${type || "no body"}`, {
          code: "bad_response",
          status: 200,
        });
        return { kind: "retry", error, streamFailure: true };
      }
      return await this.read(response.body, token);
    } finally {
      outer.removeEventListener("abort", abort);
      controller.abort();
    }
  }

  /**
   * Read the stream until it ends, breaks or stalls (no byte for `stallTimeout`: the server
   * sends `retry:` at once and pings every 15 s, so a silent stream is held up on the way).
   * @param {ReadableStream<Uint8Array>} body @param {string|null} token @returns {Promise<Outcome>}
   */
  async read(body, token) {
    const watch = this.watch;
    const reader = body.getReader();
    const decoder = new TextDecoder();
    /** @type {Outcome|null} */
    let stop = null;
    const parser = new SseParser(({ event, data }) => {
      if (stop) return;
      stop = event === "expired" ? { kind: "expired", token } : watch.receiveSse(event, data);
    });
    this.opened();
    let bytes = 0;
    for (;;) {
      const read = await readWithin(reader, watch.stallTimeout);
      if (read === STALLED) return { kind: "retry", streamFailure: true, error: stall(watch.stallTimeout) };
      if (read.done) return { kind: "retry", streamFailure: bytes === 0 }; // the server closed it: resume
      bytes += read.value.byteLength;
      parser.feed(decoder.decode(read.value, { stream: true }));
      if (parser.events > 0) watch.streamFailures = 0;
      if (stop) return stop;
    }
  }
}

/** @param {number} ms */
function stall(ms) {
  return new UnderwayError(`nothing came for ${ms} ms: a proxy may hold the stream back`, {
    code: "stalled",
  });
}

/** @param {Record<string, string>} headers @param {string|null} token */
function authorized(headers, token) {
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

const STALLED = Symbol("stalled");

/**
 * @param {ReadableStreamDefaultReader<Uint8Array>} reader @param {number} ms
 * @returns {Promise<ReadableStreamReadResult<Uint8Array> | typeof STALLED>}
 */
async function readWithin(reader, ms) {
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  let timer;
  const stalled = new Promise((resolve) => {
    timer = setTimeout(() => resolve(STALLED), ms);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * SSE through `EventSource`, where `fetch` cannot stream. It reconnects by itself (with
 * `Last-Event-ID`) after a drop, and gives up on any answer but 200: then the status is read from
 * the error (the npm `eventsource` package gives it) or by asking the URL with `fetch`.
 */
class EventSourceSse {
  /** @param {Watch} watch */
  constructor(watch) {
    this.watch = watch;
    /** @type {any} */
    this.source = null;
    /** @type {AbortController|null} */
    this.controller = null;
    this.reopened = 0;
  }

  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.open(this.controller.signal).catch(report);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
    this.source?.close();
    this.source = null;
  }

  /** @param {AbortSignal} signal */
  async open(signal) {
    const watch = this.watch;
    /** @type {string|null} */
    let token = null;
    try {
      token = await watch.tokens.current();
    } catch (error) {
      watch.fail(asUnderwayError(error), false);
      return this.later(signal);
    }
    if (signal.aborted) return;
    const url = new URL(watch.streamUrl(), pageUrl());
    if (token) url.searchParams.set("token", token);
    const source = new watch.EventSourceImpl(url.toString(), {
      withCredentials: watch.credentials === "include",
    });
    this.source = source;
    for (const name of [...EVENT_TYPES, "end", "snapshot", "batch"]) {
      source.addEventListener(name, (/** @type {MessageEvent} */ message) => {
        if (!signal.aborted) watch.receiveSse(name, message.data);
      });
    }
    source.addEventListener("expired", () => {
      source.close();
      watch.setConnected(false);
      if (!signal.aborted) this.refreshThen(signal, token);
    });
    source.onopen = () => {
      watch.failures = 0;
      watch.setConnected(true);
    };
    source.onerror = (/** @type {any} */ event) => {
      watch.setConnected(false);
      if (source.readyState !== 2 || signal.aborted) return; // CONNECTING: it retries by itself
      source.close();
      this.gaveUp(signal, token, typeof event?.code === "number" ? event.code : undefined).catch(report);
    };
  }

  /** @param {AbortSignal} signal @param {string|null} token @param {number|undefined} status */
  async gaveUp(signal, token, status) {
    const watch = this.watch;
    if (status === undefined) status = await watch.probe(token);
    if (signal.aborted) return;
    if (status === 204) return watch.finish(undefined);
    if (status === 401 && watch.tokens.refreshable) return this.refreshThen(signal, token);
    if (status === 0 || status === 200 || status === 408 || status === 429 || status >= 500)
      return this.later(signal);
    const code = status === 401 ? "unauthenticated" : `http_${status}`;
    watch.fail(new UnderwayError(`the stream was refused (HTTP ${status})`, { code, status }), true);
  }

  /** @param {AbortSignal} signal @param {string|null} token */
  async refreshThen(signal, token) {
    try {
      await this.watch.tokens.refresh(token);
    } catch (error) {
      this.watch.fail(asUnderwayError(error), false);
      return this.later(signal);
    }
    if (reopenNow(this)) return this.open(signal);
    return this.later(signal);
  }

  /** @param {AbortSignal} signal */
  async later(signal) {
    const watch = this.watch;
    watch.failures += 1;
    await sleep(backoffDelay(watch.failures, watch.retryDelay, watch.maxRetryDelay), signal);
    if (!signal.aborted) await this.open(signal);
  }
}

function pageUrl() {
  return typeof location === "undefined" ? undefined : location.href;
}

/** Long polling of one job's events: `GET /jobs/{id}/events?after=&wait=`. */
class LongPoll extends Looping {
  /** @param {AbortSignal} signal @returns {Promise<Outcome>} */
  async attempt(signal) {
    const watch = /** @type {JobWatch} */ (this.watch);
    for (;;) {
      const token = await watch.tokens.current();
      const url = urlOf(watch.base, `/jobs/${seg(watch.id)}/events`, {
        after: watch.cursor,
        wait: watch.pollWait,
      });
      const answer = await watch.getJson(url, token, signal, (watch.pollWait + 15) * 1000);
      if ("outcome" in answer) return answer.outcome;
      this.opened();
      const events = answer.body.events ?? [];
      for (const event of events) watch.receive({ type: "event", event });
      if (watch.ended || signal.aborted) return { kind: "stopped" };
      // `status` is read after the events: terminal with nothing new means nothing is left
      if (events.length === 0 && TERMINAL.has(answer.body.status)) {
        return { kind: "end", info: { job_id: watch.id, status: answer.body.status } };
      }
    }
  }
}

/** Polling of many jobs' or a batch's state every `pollInterval` (states, not events). */
class SnapshotPoll extends Looping {
  /** @param {AbortSignal} signal @returns {Promise<Outcome>} */
  async attempt(signal) {
    const watch = this.watch;
    for (;;) {
      const token = await watch.tokens.current();
      const outcome = await watch.pollOnce(token, signal);
      if (outcome) return outcome;
      this.opened();
      await sleep(watch.pollInterval, signal);
      if (signal.aborted) return { kind: "stopped" };
    }
  }
}

// -- the shared WebSocket -----------------------------------------------------------------------------------

/** @type {Map<string, Hub>} */
const hubs = new Map();

/**
 * One WebSocket per API, shared by every watch of the page with transport "ws" (protocol:
 * underway/web/ws.py). It authenticates once, with the token of its first subscription, so the
 * watches sharing it should use the same token (or token function). It reconnects with backoff
 * and subscribes every watch again (a job from its last seq); it closes a second after its last
 * subscription left.
 */
class Hub {
  /** @param {string} url @param {any} WebSocketImpl */
  constructor(url, WebSocketImpl) {
    this.url = url;
    this.WebSocketImpl = WebSocketImpl;
    /** @type {Set<WsSubscription>} */
    this.subs = new Set();
    /** @type {any} */
    this.socket = null;
    this.open = false;
    this.connecting = false;
    this.nextId = 1;
    /** @type {Map<number, WsSubscription>} subscriptions waiting for their reply, by request id */
    this.waiting = new Map();
    /** @type {Map<string, WsSubscription>} */
    this.bySub = new Map();
    /** @type {Map<string, any[]>} pushes that came before the reply naming their subscription */
    this.early = new Map();
    this.failures = 0;
    this.reopened = 0;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.retryTimer = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.lingerTimer = null;
    this.tokens = new Tokens(() => {
      for (const sub of this.subs) return sub.watch.options().token;
      return null;
    });
  }

  /** @param {WsSubscription} sub */
  add(sub) {
    this.subs.add(sub);
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lingerTimer = null;
    if (this.open) this.subscribe(sub);
    else if (!this.socket && !this.connecting && !this.retryTimer) this.connect().catch(report);
  }

  /** @param {WsSubscription} sub */
  remove(sub) {
    this.subs.delete(sub);
    if (sub.id !== null) {
      this.bySub.delete(sub.id);
      if (this.open) this.send({ id: this.nextId++, op: "unsubscribe", sub: sub.id });
      sub.id = null;
    }
    if (this.subs.size === 0 && !this.lingerTimer) {
      this.lingerTimer = setTimeout(() => this.linger(), 1000);
    }
  }

  linger() {
    this.lingerTimer = null;
    if (this.subs.size > 0) return;
    const socket = this.socket;
    this.reset();
    socket?.close(1000, "no subscription left");
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (hubs.get(this.url) === this) hubs.delete(this.url);
  }

  reset() {
    this.socket = null;
    this.open = false;
    this.waiting.clear();
    this.bySub.clear();
    this.early.clear();
    for (const sub of this.subs) sub.id = null;
  }

  async connect() {
    if (this.subs.size === 0 || this.socket || this.connecting) return;
    this.connecting = true;
    /** @type {string|null} */
    let token = null;
    try {
      token = await this.tokens.current();
    } catch (error) {
      this.connecting = false;
      for (const sub of this.subs) sub.watch.fail(asUnderwayError(error), false);
      return this.retry();
    }
    this.connecting = false;
    if (this.socket || this.subs.size === 0) return;
    const url = new URL(this.url);
    if (token) url.searchParams.set("token", token);
    /** @type {any} */
    let socket;
    try {
      socket = new this.WebSocketImpl(url.toString());
    } catch (error) {
      for (const sub of this.subs) sub.watch.fail(unreachable(error), false);
      return this.retry();
    }
    this.socket = socket;
    // Lost: closed, or an error (Node 20's WebSocket fires only "error" when it cannot connect),
    // or no answer within 10 s. Whichever comes first counts, once.
    const lost = (/** @type {number} */ code, /** @type {string} */ reason) => {
      clearTimeout(timer);
      if (this.socket !== socket) return;
      this.closed(code, reason, token).catch(report);
      try {
        socket.close();
      } catch {
        // closed already
      }
    };
    const timer = setTimeout(() => lost(1006, "no answer"), 10000);
    socket.onopen = () => {
      clearTimeout(timer);
      if (this.socket !== socket) return;
      this.open = true;
      for (const sub of this.subs) this.subscribe(sub);
    };
    socket.onmessage = (/** @type {MessageEvent} */ message) => {
      if (this.socket !== socket) return;
      let parsed;
      try {
        parsed = JSON.parse(String(message.data));
      } catch {
        return;
      }
      this.receive(parsed);
    };
    socket.onerror = () => lost(1006, "");
    socket.onclose = (/** @type {CloseEvent} */ event) => lost(event.code, event.reason);
  }

  /** @param {any} message */
  send(message) {
    try {
      this.socket?.send(JSON.stringify(message));
    } catch (error) {
      report(error);
    }
  }

  /** @param {WsSubscription} sub */
  subscribe(sub) {
    const id = this.nextId++;
    sub.id = null;
    this.waiting.set(id, sub);
    this.send({ id, op: "subscribe", ...sub.watch.wsRequest() });
  }

  /** @param {any} message */
  receive(message) {
    if ("reply" in message) return this.replied(message);
    if (!("sub" in message)) return;
    const name = String(message.sub);
    const sub = this.bySub.get(name);
    if (sub) return this.push(sub, message);
    const early = this.early.get(name) ?? [];
    early.push(message);
    this.early.set(name, early);
  }

  /** @param {any} message */
  replied(message) {
    const sub = this.waiting.get(message.reply);
    if (!sub) return;
    this.waiting.delete(message.reply);
    if (!this.subs.has(sub)) {
      if (message.ok && message.sub) this.send({ id: this.nextId++, op: "unsubscribe", sub: message.sub });
      return;
    }
    if (!message.ok) return this.refused(sub, message.error ?? {});
    this.failures = 0;
    sub.id = String(message.sub);
    this.bySub.set(sub.id, sub);
    sub.watch.failures = 0;
    sub.watch.setConnected(true);
    const early = this.early.get(sub.id) ?? [];
    this.early.delete(sub.id);
    for (const push of early) this.push(sub, push);
  }

  /** @param {WsSubscription} sub @param {{code?: string, message?: string}} refusal */
  refused(sub, { code = "error", message = "the subscription was refused" }) {
    const error = new UnderwayError(message, { code, status: /** @type {any} */ (CODE_STATUS)[code] ?? 0 });
    if (code !== "too_many_requests") return sub.watch.fail(error, true);
    sub.watch.fail(error, false);
    sub.watch.failures += 1;
    const delay = backoffDelay(sub.watch.failures, sub.watch.retryDelay, sub.watch.maxRetryDelay);
    setTimeout(() => this.open && this.subs.has(sub) && sub.id === null && this.subscribe(sub), delay);
  }

  /** @param {WsSubscription} sub @param {any} message */
  push(sub, message) {
    if ("event" in message) return sub.watch.receive({ type: "event", event: message.event });
    if ("snapshot" in message) return sub.watch.receive({ type: "snapshot", body: message.snapshot });
    if ("batch" in message) return sub.watch.receive({ type: "batch", body: message.batch });
    if ("end" in message) {
      this.bySub.delete(String(message.sub));
      sub.id = null;
      sub.watch.receive({ type: "end", body: message.end });
    }
  }

  /** @param {number} code @param {string} reason @param {string|null} token */
  async closed(code, reason, token) {
    this.reset();
    for (const sub of this.subs) sub.watch.setConnected(false);
    if (this.subs.size === 0) return;
    if (code === 4401) {
      if (!this.tokens.refreshable) return this.failAll(code, reason, 401, "unauthenticated");
      try {
        await this.tokens.refresh(token);
      } catch (error) {
        for (const sub of this.subs) sub.watch.fail(asUnderwayError(error), false);
        return this.retry();
      }
      if (reopenNow(this)) return this.connect();
      const error = new UnderwayError(`the token was refused again (${code}${reason ? `: ${reason}` : ""})`, {
        code: "unauthenticated",
        status: 401,
      });
      for (const sub of this.subs) sub.watch.fail(error, false);
      return this.retry();
    }
    if (code === 4403) return this.failAll(code, reason, 403, "forbidden");
    if (code === 1009) return this.failAll(code, reason, 413, "message_too_big");
    this.retry();
  }

  /** @param {number} code @param {string} reason @param {number} status @param {string} name */
  failAll(code, reason, status, name) {
    const error = new UnderwayError(`the WebSocket was closed (${code}${reason ? `: ${reason}` : ""})`, {
      code: name,
      status,
    });
    for (const sub of [...this.subs]) sub.watch.fail(error, true);
  }

  retry() {
    if (this.retryTimer || this.subs.size === 0) return;
    this.failures += 1;
    const [first] = this.subs;
    const delay = backoffDelay(this.failures, first.watch.retryDelay, first.watch.maxRetryDelay);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect().catch(report);
    }, delay);
  }
}

/** @param {Watch} watch */
function hubFor(watch) {
  const url = new URL(`${watch.base}/ws`, pageUrl());
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const key = url.toString();
  let hub = hubs.get(key);
  if (!hub || hub.WebSocketImpl !== watch.WebSocketImpl) {
    hub = new Hub(key, watch.WebSocketImpl);
    hubs.set(key, hub);
  }
  return hub;
}

/** One watch's subscription on the shared WebSocket. */
class WsSubscription {
  /** @param {Watch} watch */
  constructor(watch) {
    this.watch = watch;
    /** @type {string|null} the server's name of the subscription, once it replied */
    this.id = null;
    /** @type {Hub|null} */
    this.hub = null;
  }

  start() {
    if (this.hub) return;
    this.hub = hubFor(this.watch);
    this.hub.add(this);
  }

  stop() {
    this.hub?.remove(this);
    this.hub = null;
  }
}

// -- watches --------------------------------------------------------------------------------------------------

/**
 * What the three kinds of watch have in common: options, token, transport, connection state,
 * pausing, the end and errors. The kinds (job, jobs, batch) say what they stream and how they
 * take what arrives (`receive`); every transport hands them the same messages.
 */
class Watch {
  /** @param {() => WatchOptions} options read again each time: a store may replace them */
  constructor(options) {
    this.options = options;
    const o = options();
    this.base = cleanBase(o.baseUrl);
    /** @type {string} */
    this.mode = o.transport ?? "sse";
    if (!["sse", "ws", "poll"].includes(this.mode)) {
      throw new UnderwayError(`unknown transport ${JSON.stringify(this.mode)}: use "sse", "ws" or "poll"`, {
        code: "invalid_options",
      });
    }
    this.fetch = fetchOf(o);
    this.EventSourceImpl = o.EventSource ?? globalThis.EventSource;
    this.WebSocketImpl = o.WebSocket ?? globalThis.WebSocket;
    if (this.mode === "ws" && typeof this.WebSocketImpl !== "function") {
      throw new UnderwayError("no WebSocket here: pass one as the WebSocket option", {
        code: "invalid_options",
      });
    }
    this.sseClient = o.sseClient ?? (typeof ReadableStream === "undefined" ? "eventsource" : "fetch");
    this.credentials = o.credentials ?? "same-origin";
    this.retryDelay = o.retryDelay ?? 1000;
    this.maxRetryDelay = o.maxRetryDelay ?? 30000;
    this.stallTimeout = o.stallTimeout ?? 20000;
    this.fallbackAfter = o.fallbackAfter ?? 3;
    this.pollWait = o.pollWait ?? 25;
    this.pollInterval = o.pollInterval ?? 2000;
    this.pauseWhenHidden = o.pauseWhenHidden ?? true;
    this.tokens = new Tokens(() => this.options().token);
    this.delivery = new Delivery(options);
    /** @type {{start(): void, stop(): void}|null} */
    this.transport = null;
    /** failed attempts in a row (the backoff's exponent) */
    this.failures = 0;
    /** stream attempts in a row that failed as streams (stalled, not an event stream, 5xx) */
    this.streamFailures = 0;
    this.connected = false;
    /** the end was reported (onEnd) */
    this.ended = false;
    /** a fatal error stopped it */
    this.stopped = false;
    /** close() was called */
    this.closed = false;
    this.paused = false;
  }

  get over() {
    return this.closed || this.ended || this.stopped;
  }

  start() {
    const signal = this.options().signal;
    if (signal?.aborted) return this.close();
    signal?.addEventListener("abort", () => this.close(), { once: true });
    followVisibility(this);
    this.connect();
  }

  connect() {
    if (this.over || this.paused || this.transport) return;
    this.transport = this.makeTransport();
    this.transport.start();
  }

  makeTransport() {
    if (this.mode === "ws") return new WsSubscription(this);
    if (this.mode === "poll") return this.pollTransport();
    if (this.sseClient !== "eventsource") return new FetchSse(this);
    if (typeof this.EventSourceImpl === "function") return new EventSourceSse(this);
    return this.pollTransport();
  }

  /** @returns {{start(): void, stop(): void}} */
  pollTransport() {
    return new SnapshotPoll(this);
  }

  disconnect() {
    this.transport?.stop();
    this.transport = null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.disconnect();
    visibleWatches.delete(this);
    this.delivery.cancelled = true;
  }

  /** @param {boolean} hidden */
  setHidden(hidden) {
    if (!this.pauseWhenHidden || this.over || hidden === this.paused) return;
    this.paused = hidden;
    if (hidden) {
      this.disconnect();
      this.setConnected(false);
    } else {
      this.connect(); // and catch up: every transport resumes where it stopped
    }
  }

  /** Streaming kept failing (a proxy that buffers, say): long-poll from now on. */
  fallBack() {
    if (this.over || this.mode === "poll") return;
    this.disconnect();
    this.mode = "poll";
    this.connect();
  }

  /** @param {boolean} connected */
  setConnected(connected) {
    if (connected === this.connected) return;
    this.connected = connected;
    this.delivery.replace("onConnection", connected);
  }

  /** The stream said it is over (`event: end`, 204): report it once, and stop. */
  /** @param {any} info */
  finish(info) {
    if (this.over) return;
    this.ended = true;
    this.disconnect();
    this.setConnected(false);
    visibleWatches.delete(this);
    this.delivery.finish(this.endInfo(info));
  }

  /** @param {any} info */
  endInfo(info) {
    return info ?? null;
  }

  /** @param {UnderwayError} error @param {boolean} fatal true: the watch stops (without an end) */
  fail(error, fatal) {
    if (this.over) return;
    if (fatal) {
      error.fatal = true;
      this.stopped = true;
      this.disconnect();
      this.setConnected(false);
      visibleWatches.delete(this);
    }
    this.delivery.push("onError", error);
  }

  /**
   * An SSE event by name; `{kind: "stopped"}` when it ended the watch.
   * @param {string} name @param {string} data @returns {Outcome|null}
   */
  receiveSse(name, data) {
    let body;
    try {
      body = JSON.parse(data);
    } catch {
      return null;
    }
    if (EVENT_TYPES.has(name)) this.receive({ type: "event", event: body });
    else if (name === "snapshot" || name === "batch" || name === "end") this.receive({ type: name, body });
    return this.over ? { kind: "stopped" } : null;
  }

  /** @param {{type: string, event?: any, body?: any}} message */
  receive(message) {}

  /** @returns {string} */
  streamUrl() {
    return this.base;
  }

  /** @returns {Record<string, any>} */
  wsRequest() {
    return {};
  }

  /**
   * One GET of JSON: the body, or the outcome of a failure.
   * @param {string} url @param {string|null} token @param {AbortSignal} signal @param {number} [timeout] ms
   * @returns {Promise<{body: any} | {outcome: Outcome}>}
   */
  async getJson(url, token, signal, timeout = 30000) {
    const controller = new AbortController();
    const abort = () => controller.abort();
    signal.addEventListener("abort", abort, { once: true });
    const timer = setTimeout(abort, timeout);
    try {
      const headers = authorized({ Accept: "application/json" }, token);
      const init = { headers, signal: controller.signal, cache: /** @type {const} */ ("no-store") };
      const response = await this.fetch(url, { ...init, credentials: this.credentials });
      if (!response.ok) return { outcome: outcomeOf(await errorFrom(response), token) };
      return { body: await response.json() };
    } catch (error) {
      if (signal.aborted) return { outcome: { kind: "stopped" } };
      return { outcome: { kind: "retry", error: unreachable(error) } };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", abort);
    }
  }

  /**
   * The status the stream's URL answers now (0 if unknown): asked with `fetch` when an
   * EventSource gave up without saying why (a browser's never says).
   * @param {string|null} token @returns {Promise<number>}
   */
  async probe(token) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 10000);
    try {
      const headers = authorized({ Accept: "text/event-stream" }, token);
      const response = await this.fetch(this.streamUrl(), {
        headers,
        signal: controller.signal,
        credentials: this.credentials,
      });
      return response.status;
    } catch {
      return 0;
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  }

  /**
   * One poll of the state (transport "poll" of watchJobs and watchBatch): null when it went well.
   * @param {string|null} token @param {AbortSignal} signal @returns {Promise<Outcome|null>}
   */
  async pollOnce(token, signal) {
    return null;
  }
}

/** One job: its events after a seq, and its folded state. */
class JobWatch extends Watch {
  /** @param {string} id @param {() => WatchOptions} options */
  constructor(id, options) {
    super(options);
    if (typeof id !== "string" || id === "")
      throw new UnderwayError("watchJob needs a job id", { code: "invalid_options" });
    this.id = id;
    /** the seq of the last event delivered: the resume point */
    this.cursor = this.options().after ?? 0;
    /** @type {JobState|null} */
    this.state = null;
  }

  start() {
    if (this.cursor > 0) this.seed().finally(() => super.start());
    else super.start();
  }

  /** Resuming after a seq: the job's state so far comes from the job itself. */
  async seed() {
    try {
      const token = await this.tokens.current();
      const controller = new AbortController();
      const answer = await this.getJson(urlOf(this.base, `/jobs/${seg(this.id)}`), token, controller.signal);
      if ("body" in answer && !this.state) {
        this.state = jobState(answer.body);
        this.delivery.replace("onJob", this.state);
      }
    } catch {
      // the stream reports what is wrong
    }
  }

  pollTransport() {
    return new LongPoll(this);
  }

  streamUrl() {
    return urlOf(this.base, `/jobs/${seg(this.id)}/stream`, { after: this.cursor || undefined });
  }

  wsRequest() {
    return { job: this.id, after: this.cursor };
  }

  /** @param {{type: string, event?: any, body?: any}} message */
  receive(message) {
    if (this.over) return;
    if (message.type === "event") {
      const event = message.event;
      if (event.job_id !== this.id || event.seq <= this.cursor) return;
      this.cursor = event.seq;
      this.delivery.push("onEvent", event);
      const state = foldJob(this.state, event);
      if (state !== this.state) {
        this.state = state;
        this.delivery.replace("onJob", state);
      }
    } else if (message.type === "end") {
      this.finish(message.body);
    }
  }

  /** @param {any} info */
  endInfo(info) {
    return info ?? { job_id: this.id, status: this.state?.status ?? null };
  }
}

/** Many jobs on one connection (`GET /stream`): a snapshot, then their events. */
class JobsWatch extends Watch {
  /** @param {JobsFilter} filter @param {() => WatchOptions} options */
  constructor(filter, options) {
    super(options);
    this.filter = normalFilter(filter);
    /** @type {Record<string, JobState>} */
    this.states = {};
    /** @type {Map<string, number>} each job's last event delivered: none is delivered twice */
    this.seqs = new Map();
    // the WebSocket cannot follow a batch's jobs as jobs (a batch subscription is the batch's view)
    if (this.mode === "ws" && this.filter.batch) this.mode = "sse";
  }

  streamUrl() {
    const { jobs, queue, task, label, batch, q } = this.filter;
    const ids = jobs.length ? jobs.join(",") : undefined;
    return urlOf(this.base, "/stream", { jobs: ids, queue, task, label, batch, q });
  }

  wsRequest() {
    const { jobs, batch: _batch, ...rest } = this.filter;
    const given = Object.fromEntries(Object.entries(rest).filter(([, value]) => value !== undefined));
    return { ...(jobs.length ? { jobs } : {}), ...given };
  }

  /** @param {{type: string, event?: any, body?: any}} message */
  receive(message) {
    if (this.over) return;
    if (message.type === "snapshot") {
      /** @type {Record<string, JobState>} */
      const states = {};
      this.seqs = new Map();
      for (const job of message.body?.jobs ?? []) {
        states[job.id] = jobState(job);
        this.seqs.set(job.id, job.last_seq);
      }
      this.states = states;
      this.delivery.replace("onJobs", states);
    } else if (message.type === "event") {
      const event = message.event;
      if (event.seq <= (this.seqs.get(event.job_id) ?? 0)) return;
      this.seqs.set(event.job_id, event.seq);
      this.delivery.push("onEvent", event);
      // The states are a new object per change (for React and stores): made only when someone
      // reads them, since copying them for every event of a thousand busy jobs costs.
      if (typeof this.options().onJobs !== "function") return;
      this.states = { ...this.states, [event.job_id]: foldJob(this.states[event.job_id], event) };
      this.delivery.replace("onJobs", this.states);
    }
  }

  /** @param {string|null} token @param {AbortSignal} signal @returns {Promise<Outcome|null>} */
  async pollOnce(token, signal) {
    const { jobs, queue, task, label, batch, q } = this.filter;
    /** @type {any[]} */
    const found = [];
    if (jobs.length && !q) {
      for (const id of jobs) {
        const answer = await this.getJson(urlOf(this.base, `/jobs/${seg(id)}`), token, signal);
        if ("body" in answer) found.push(answer.body);
        else if (answer.outcome.kind !== "fatal" || answer.outcome.error.status !== 404)
          return answer.outcome;
      }
    } else {
      // GET /jobs takes every filter, a search too; a batch's own items route says 404 for no batch
      const path = batch && !q ? `/batches/${seg(batch)}/items` : "/jobs";
      const ids = jobs.length ? jobs.join(",") : undefined;
      const query = path === "/jobs" ? { queue, task, label, batch, q, ids, limit: 500 } : { limit: 500 };
      const answer = await this.getJson(urlOf(this.base, path, query), token, signal);
      if ("outcome" in answer) return answer.outcome;
      found.push(...answer.body.jobs);
    }
    this.receive({ type: "snapshot", body: { jobs: found } });
    return null;
  }
}

/**
 * What `watchJobs` follows: some ids, a queue, a task, a label (`"key:value"`), a batch's jobs,
 * a search (`q`: the jobs whose id starts with it or whose arguments' JSON contains it), or all
 * of them (every one given must match).
 * @typedef {{jobs?: string[], queue?: string|null, task?: string|null, label?: string|null,
 *   batch?: string|null, q?: string|null}} JobsFilter
 */

/** @param {JobsFilter|null|undefined} filter */
function normalFilter(filter) {
  const jobs = [...new Set((filter?.jobs ?? []).map(String))].sort();
  return {
    jobs,
    queue: filter?.queue || undefined,
    task: filter?.task || undefined,
    label: filter?.label || undefined,
    batch: filter?.batch || undefined,
    q: filter?.q || undefined,
  };
}

/** One batch: its view (counts, percent, ETA) and the items that changed. */
class BatchWatch extends Watch {
  /** @param {string} id @param {() => WatchOptions} options */
  constructor(id, options) {
    super(options);
    if (typeof id !== "string" || id === "")
      throw new UnderwayError("watchBatch needs a batch id", { code: "invalid_options" });
    this.id = id;
    /** @type {any} */
    this.batch = null;
  }

  streamUrl() {
    return urlOf(this.base, `/batches/${seg(this.id)}/stream`);
  }

  wsRequest() {
    return { batch: this.id };
  }

  /** @param {{type: string, event?: any, body?: any}} message */
  receive(message) {
    if (this.over) return;
    if (message.type === "snapshot") {
      this.batch = message.body;
      this.delivery.push("onBatch", message.body, []);
    } else if (message.type === "batch") {
      this.batch = message.body.batch;
      this.delivery.push("onBatch", message.body.batch, message.body.items ?? []);
    } else if (message.type === "end") {
      this.batch = message.body ?? this.batch;
      this.finish(this.batch);
    }
  }

  /** @param {string|null} token @param {AbortSignal} signal @returns {Promise<Outcome|null>} */
  async pollOnce(token, signal) {
    const answer = await this.getJson(urlOf(this.base, `/batches/${seg(this.id)}`), token, signal);
    if ("outcome" in answer) return answer.outcome;
    const view = answer.body;
    this.receive(
      this.batch === null
        ? { type: "snapshot", body: view }
        : { type: "batch", body: { batch: view, items: [] } },
    );
    if (BATCH_TERMINAL.has(view.status)) return { kind: "end", info: view };
    return null;
  }
}

/** @typedef {{close(): void}} WatchHandle */

/** @param {Watch} watch @returns {WatchHandle} */
function handleOf(watch) {
  watch.start();
  return { close: () => watch.close() };
}

/** @param {WatchOptions} options */
const constant = (options) => () => options;

/**
 * Watch one job: `onEvent` for each event after `after`, `onJob` with its folded state, `onEnd`
 * once when it ended (never on a mere disconnect).
 * @param {string} id @param {WatchOptions} [options] @returns {WatchHandle}
 */
export function watchJob(id, options = {}) {
  return handleOf(new JobWatch(id, constant(options)));
}

/**
 * Watch a batch: `onBatch(view, changedItems)` at most every 0.25 s, `onEnd(view)` when every
 * item has ended.
 * @param {string} id @param {WatchOptions} [options] @returns {WatchHandle}
 */
export function watchBatch(id, options = {}) {
  return handleOf(new BatchWatch(id, constant(options)));
}

/**
 * Watch many jobs on one connection: some ids, a queue, a batch's jobs, a search (`q`), or
 * (`{}`) every job the caller sees. `onJobs(statesById)` after the snapshot and after each event.
 * @param {JobsFilter} filter @param {WatchOptions} [options]
 * @returns {WatchHandle}
 */
export function watchJobs(filter = {}, options = {}) {
  return handleOf(new JobsWatch(filter, constant(options)));
}

// -- REST helpers ------------------------------------------------------------------------------------------

/**
 * @typedef {object} ClientOptions
 * @property {string} [baseUrl] default "/api"
 * @property {TokenOption} [token] an API key or stream token, or a function returning a stream token
 * @property {typeof fetch} [fetch]
 * @property {RequestCredentials} [credentials]
 * @property {string | (() => string | null | undefined)} [csrfToken] a browser signed in with
 *   `POST /session` (its cookie): the session's CSRF token, or a function returning it, sent as
 *   `X-CSRF-Token` with every change (the server refuses a cookie's change without it)
 */

/**
 * A client of underway's REST API. Errors are `UnderwayError`s with underway's error code.
 * @param {ClientOptions} [options]
 */
export function createClient(options = {}) {
  const base = cleanBase(options.baseUrl);
  const doFetch = fetchOf(/** @type {WatchOptions} */ (options));
  const tokens = new Tokens(() => options.token);
  /**
   * @param {string} method @param {string} path
   * @param {{query?: Record<string, any>, body?: any}} [init]
   */
  async function call(method, path, init = {}) {
    const url = urlOf(base, path, init.query);
    let token = await tokens.current();
    let response = await send(method, url, token, init.body);
    if (response.status === 401 && tokens.refreshable) {
      token = await tokens.refresh(token);
      response = await send(method, url, token, init.body);
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return response.json();
  }
  /** @param {string} method @param {string} url @param {string|null} token @param {any} body */
  async function send(method, url, token, body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      const csrf = typeof options.csrfToken === "function" ? options.csrfToken() : options.csrfToken;
      if (csrf) headers["X-CSRF-Token"] = csrf;
    }
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      return await doFetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: options.credentials ?? "same-origin",
      });
    } catch (error) {
      throw unreachable(error);
    }
  }
  /** @param {Record<string, any>} [fields] */
  const defined = (fields = {}) =>
    Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
  /** The body of a change of many jobs: `status` always a list. @param {Record<string, any>} filter */
  const filterBody = (filter) => {
    const status =
      filter.status === undefined || Array.isArray(filter.status) ? filter.status : [filter.status];
    return defined({ ...filter, status });
  };
  return {
    /**
     * Queue a job; `submitOptions`: `queue, priority, delay, run_at, max_attempts, timeout,
     * labels, idempotency_key, owner`.
     * @param {string} task @param {Record<string, any>} [args] @param {Record<string, any>} [submitOptions]
     */
    submit: (task, args = {}, submitOptions = {}) =>
      call("POST", "/jobs", { body: { ...defined(submitOptions), task, args } }),
    /**
     * One job per item, in one transaction; `batchOptions` as submit's, and `name`.
     * @param {string} task @param {Record<string, any>[]} items @param {Record<string, any>} [batchOptions]
     */
    submitBatch: (task, items, batchOptions = {}) =>
      call("POST", "/batches", { body: { ...defined(batchOptions), task, items } }),
    /** @param {string} id */
    get: (id) => call("GET", `/jobs/${seg(id)}`),
    /**
     * `{status?, queue?, task?, label?, owner?, batch?, q?, ids?, limit?, cursor?}` →
     * `{jobs, next_cursor}`; `q` is a search (the jobs whose id starts with it or whose
     * arguments' JSON contains it), `ids` an array of job ids
     * @param {Record<string, any>} [filter]
     */
    list: (filter = {}) =>
      call("GET", "/jobs", {
        query: { ...filter, ids: Array.isArray(filter.ids) ? filter.ids.join(",") : filter.ids },
      }),
    /**
     * `{events, next_after, status}`: the job's events after `after`, long-polled with `wait`.
     * @param {string} id @param {{after?: number, wait?: number, types?: string[]|string, limit?: number}} [query]
     */
    events: (id, query = {}) =>
      call("GET", `/jobs/${seg(id)}/events`, {
        query: { ...query, types: Array.isArray(query.types) ? query.types.join(",") : query.types },
      }),
    /** @param {string} id */
    cancel: (id) => call("POST", `/jobs/${seg(id)}/cancel`),
    /**
     * Cancel every unfinished job that matches `{status?, queue?, task?, batch?, label?, owner?,
     * q?, ids?}` (`ids`, if given, must name at least one job) → `{cancelled}`
     * @param {Record<string, any>} [filter]
     */
    cancelAll: (filter = {}) => call("POST", "/jobs/cancel", { body: filterBody(filter) }),
    /**
     * Run every finished job that matches again, the failed and cancelled ones unless `status`
     * names finished statuses; the filter as `cancelAll`'s → `{retried}`
     * @param {Record<string, any>} [filter]
     */
    retryAll: (filter = {}) => call("POST", "/jobs/retry", { body: filterBody(filter) }),
    /** @param {string} id @param {any} value @param {string} [key] */
    answer: (id, value, key) => call("POST", `/jobs/${seg(id)}/answer`, { body: defined({ value, key }) }),
    /** @param {string} id */
    retry: (id) => call("POST", `/jobs/${seg(id)}/retry`),
    /** @param {string} id */
    getBatch: (id) => call("GET", `/batches/${seg(id)}`),
    /** @param {string} id */
    cancelBatch: (id) => call("POST", `/batches/${seg(id)}/cancel`),
    /** @param {string} batchId */
    retryFailed: (batchId) => call("POST", `/batches/${seg(batchId)}/retry-failed`),
    /** @param {string} id */
    pauseBatch: (id) => call("POST", `/batches/${seg(id)}/pause`),
    /** @param {string} id */
    resumeBatch: (id) => call("POST", `/batches/${seg(id)}/resume`),
    /** @param {string} name */
    pauseQueue: (name) => call("POST", `/queues/${seg(name)}/pause`),
    /** @param {string} name */
    resumeQueue: (name) => call("POST", `/queues/${seg(name)}/resume`),
    /**
     * `{job?, batch?, ttl?, owner?}` → `{token, expires_at}`
     * @param {{job?: string, batch?: string, ttl?: number, owner?: string}} [scope]
     */
    streamToken: (scope = {}) => call("POST", "/stream-tokens", { body: defined(scope) }),
    /** Forget a finished job and its events. @param {string} id */
    remove: (id) => call("DELETE", `/jobs/${seg(id)}`),
    /** `{limit?, cursor?, owner?}` → `{batches, next_cursor}` @param {Record<string, any>} [query] */
    listBatches: (query = {}) => call("GET", "/batches", { query }),
    /**
     * A batch's jobs, newest first: `{status?, limit?, cursor?}` → `{jobs, next_cursor}`
     * @param {string} id @param {Record<string, any>} [query]
     */
    batchItems: (id, query = {}) => call("GET", `/batches/${seg(id)}/items`, { query }),
    /** @returns {Promise<{queues: any[]}>} */
    queues: () => call("GET", "/queues"),
    /**
     * At most `concurrency` jobs of the queue running at once over all workers (null: no limit).
     * @param {string} name @param {number|null} concurrency
     */
    limitQueue: (name, concurrency) =>
      call("PUT", `/queues/${seg(name)}/limit`, { body: { concurrency } }),
    /** The registered tasks with their argument schemas. @returns {Promise<{tasks: any[]}>} */
    tasks: () => call("GET", "/tasks"),
    /** The live workers (admins). @returns {Promise<{workers: any[]}>} */
    workers: () => call("GET", "/workers"),
    /**
     * Time series for charts: `window` in seconds or as `"15m"`, `"1h"`, `"7d"`.
     * @param {number|string} [window] @param {string} [owner]
     */
    stats: (window = 3600, owner) => call("GET", "/stats", { query: { window, owner } }),
    /** Who the caller is: `{owner, role, auth, via, can, grant, csrf_token}` */
    me: () => call("GET", "/me"),
    /**
     * Exchange an API key for a session cookie (HttpOnly, SameSite=Strict) →
     * `{owner, role, csrf_token, expires_at}`: send `csrf_token` with every change (`csrfToken`).
     * @param {string} key
     */
    signIn: (key) => call("POST", "/session", { body: { key } }),
    /** End the session: its cookie is dropped. */
    signOut: () => call("DELETE", "/session"),
  };
}

/**
 * The REST helpers as functions, the client's options last: `submit(task, args, options, opts)`…
 * @param {string} task @param {Record<string, any>} [args] @param {Record<string, any>} [options]
 * @param {ClientOptions} [opts]
 */
export const submit = (task, args, options, opts) => createClient(opts).submit(task, args, options);
/**
 * @param {string} task @param {Record<string, any>[]} items @param {Record<string, any>} [options]
 * @param {ClientOptions} [opts]
 */
export const submitBatch = (task, items, options, opts) =>
  createClient(opts).submitBatch(task, items, options);
/** @param {string} id @param {ClientOptions} [opts] */
export const get = (id, opts) => createClient(opts).get(id);
/** @param {Record<string, any>} [filter] @param {ClientOptions} [opts] */
export const list = (filter, opts) => createClient(opts).list(filter);
/** @param {string} id @param {ClientOptions} [opts] */
export const cancel = (id, opts) => createClient(opts).cancel(id);
/** @param {Record<string, any>} [filter] @param {ClientOptions} [opts] */
export const cancelAll = (filter, opts) => createClient(opts).cancelAll(filter);
/** @param {Record<string, any>} [filter] @param {ClientOptions} [opts] */
export const retryAll = (filter, opts) => createClient(opts).retryAll(filter);
/** @param {string} id @param {any} value @param {string} [key] @param {ClientOptions} [opts] */
export const answer = (id, value, key, opts) => createClient(opts).answer(id, value, key);
/** @param {string} id @param {ClientOptions} [opts] */
export const retry = (id, opts) => createClient(opts).retry(id);
/** @param {string} batchId @param {ClientOptions} [opts] */
export const retryFailed = (batchId, opts) => createClient(opts).retryFailed(batchId);
/** @param {string} id @param {ClientOptions} [opts] */
export const pauseBatch = (id, opts) => createClient(opts).pauseBatch(id);
/** @param {string} id @param {ClientOptions} [opts] */
export const resumeBatch = (id, opts) => createClient(opts).resumeBatch(id);
/** @param {string} name @param {ClientOptions} [opts] */
export const pauseQueue = (name, opts) => createClient(opts).pauseQueue(name);
/** @param {string} name @param {ClientOptions} [opts] */
export const resumeQueue = (name, opts) => createClient(opts).resumeQueue(name);
/** @param {{job?: string, batch?: string, ttl?: number, owner?: string}} [scope] @param {ClientOptions} [opts] */
export const streamToken = (scope, opts) => createClient(opts).streamToken(scope);

// -- shared stores (for hooks and components) -----------------------------------------------------------------

/**
 * @template S
 * @typedef {{subscribe(listener: () => void): () => void, getSnapshot(): S,
 *   setOptions(options: WatchOptions & {linger?: number, maxEvents?: number}): void}} Store
 */
/**
 * @typedef {{job: JobState|null, events: JobEvent[], progress: Progress|null, status: JobStatus|null,
 *   error: UnderwayError|null, connected: boolean}} JobSnapshot
 */
/**
 * @typedef {{batch: any, items: Record<string, any>, status: string|null, error: UnderwayError|null,
 *   connected: boolean}} BatchSnapshot
 */
/** @typedef {{jobs: Record<string, JobState>, error: UnderwayError|null, connected: boolean}} JobsSnapshot */

/** @type {JobSnapshot} */
export const IDLE_JOB = Object.freeze({
  job: null,
  events: [],
  progress: null,
  status: null,
  error: null,
  connected: false,
});
/** @type {BatchSnapshot} */
export const IDLE_BATCH = Object.freeze({
  batch: null,
  items: {},
  status: null,
  error: null,
  connected: false,
});
/** @type {JobsSnapshot} */
export const IDLE_JOBS = Object.freeze({ jobs: {}, error: null, connected: false });

/** @type {Map<string, SharedStore>} */
const stores = new Map();

/**
 * One watch shared by every subscriber of the same target: opened by the first subscriber,
 * closed `linger` ms (default 1000) after the last one left (React StrictMode unmounts and
 * mounts again at once: no reconnect).
 */
class SharedStore {
  /**
   * @param {string} key @param {any} initial
   * @param {(options: () => WatchOptions) => Watch} open
   * @param {(store: SharedStore) => Partial<WatchOptions>} callbacks
   * @param {WatchOptions & {linger?: number, maxEvents?: number}} options
   */
  constructor(key, initial, open, callbacks, options) {
    this.key = key;
    this.initial = initial;
    this.snapshot = initial;
    this.started = false;
    this.openWatch = open;
    this.user = options;
    this.callbacks = callbacks(this);
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    /** @type {Watch|null} */
    this.watch = null;
    this.done = false;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.timer = null;
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
    this.setOptions = this.setOptions.bind(this);
    this.scheduleClose(); // a store nobody subscribes to does not stay in the registry
  }

  /** @param {() => void} listener */
  subscribe(listener) {
    this.listeners.add(listener);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!stores.has(this.key)) stores.set(this.key, this);
    if (!this.watch && !this.done) this.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.scheduleClose();
    };
  }

  getSnapshot() {
    return this.snapshot;
  }

  /** Take new options (a new token function, say) without reconnecting. */
  /** @param {WatchOptions & {linger?: number, maxEvents?: number}} options */
  setOptions(options) {
    this.user = options ?? {};
  }

  start() {
    if (this.started) this.snapshot = this.initial; // closed, then subscribed again: start over
    this.started = true;
    const options = () => ({ ...this.user, ...this.callbacks, signal: undefined });
    try {
      this.watch = this.openWatch(options);
      this.watch.start();
    } catch (error) {
      this.update({ error, connected: false });
      this.done = true;
    }
  }

  scheduleClose() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.listeners.size > 0) return;
      this.watch?.close();
      this.watch = null;
      if (stores.get(this.key) === this) stores.delete(this.key);
    }, this.user.linger ?? 1000);
  }

  /** @param {Record<string, any>} changes */
  update(changes) {
    this.snapshot = Object.freeze({ ...this.snapshot, ...changes });
    for (const listener of [...this.listeners]) listener();
  }

  /** @param {any} error */
  failed(error) {
    if (error?.fatal) this.done = true;
    this.update({ error });
  }

  /** @param {boolean} connected */
  connection(connected) {
    this.update(connected ? { connected, error: null } : { connected });
  }
}

/** @param {WatchOptions} options */
function storeKey(options) {
  return `${cleanBase(options.baseUrl)} ${options.transport ?? "sse"}`;
}

/**
 * @param {string} key @param {() => SharedStore} make
 */
function storeFor(key, make) {
  let store = stores.get(key);
  if (!store) {
    store = make();
    stores.set(key, store);
  }
  return store;
}

/**
 * The shared store of one job: snapshots `{job, events, progress, status, error, connected}`.
 * @param {string} id @param {WatchOptions & {linger?: number, maxEvents?: number}} [options]
 * @returns {Store<JobSnapshot>}
 */
export function jobStore(id, options = {}) {
  const key = `job ${storeKey(options)} ${id}`;
  return storeFor(
    key,
    () =>
      new SharedStore(
        key,
        IDLE_JOB,
        (opts) => new JobWatch(id, opts),
        (store) => ({
          onEvent: (event) => {
            const most = store.user.maxEvents ?? 1000;
            const events = [...store.snapshot.events, event];
            store.update({ events: events.length > most ? events.slice(events.length - most) : events });
          },
          onJob: (job) => store.update({ job, progress: job.progress, status: job.status }),
          onEnd: () => {
            store.done = true;
            store.update({ connected: false });
          },
          onError: (error) => store.failed(error),
          onConnection: (connected) => store.connection(connected),
        }),
        options,
      ),
  );
}

/**
 * The shared store of one batch: snapshots `{batch, items, status, error, connected}`; `items`
 * holds the latest known state of each item that changed, by id.
 * @param {string} id @param {WatchOptions & {linger?: number}} [options] @returns {Store<BatchSnapshot>}
 */
export function batchStore(id, options = {}) {
  const key = `batch ${storeKey(options)} ${id}`;
  return storeFor(
    key,
    () =>
      new SharedStore(
        key,
        IDLE_BATCH,
        (opts) => new BatchWatch(id, opts),
        (store) => ({
          onBatch: (batch, changed) => {
            /** @type {Record<string, any>} */
            const items = { ...store.snapshot.items };
            for (const item of changed) items[item.id] = { ...items[item.id], ...item };
            store.update({ batch, items, status: batch?.status ?? null });
          },
          onEnd: (batch) => {
            store.done = true;
            store.update({
              batch: batch ?? store.snapshot.batch,
              status: batch?.status ?? store.snapshot.status,
              connected: false,
            });
          },
          onError: (error) => store.failed(error),
          onConnection: (connected) => store.connection(connected),
        }),
        options,
      ),
  );
}

/**
 * The shared store of many jobs (one connection): snapshots `{jobs, error, connected}`, `jobs`
 * being the folded states by id.
 * @param {JobsFilter} filter
 * @param {WatchOptions & {linger?: number}} [options] @returns {Store<JobsSnapshot>}
 */
export function jobsStore(filter = {}, options = {}) {
  const normal = normalFilter(filter);
  const { jobs, queue, task, label, batch, q } = normal;
  const filterKey = JSON.stringify([jobs, queue ?? null, task ?? null, label ?? null, batch ?? null, q ?? null]);
  const key = `jobs ${storeKey(options)} ${filterKey}`;
  return storeFor(
    key,
    () =>
      new SharedStore(
        key,
        IDLE_JOBS,
        (opts) => new JobsWatch(normal, opts),
        (store) => ({
          onJobs: (states) => store.update({ jobs: states }),
          onError: (error) => store.failed(error),
          onConnection: (connected) => store.connection(connected),
        }),
        options,
      ),
  );
}

// -- React hooks, given React (underway-react.js passes the one it imports) ------------------------------------

const noSubscription = () => () => {};

/**
 * `useJob`, `useBatch` and `useJobs` for the React given: for pages without a bundler, which
 * load React themselves (`createHooks(React)`); `underway-react.js` does this with `react`.
 *
 * Each hook takes `enabled` (default true) with the watch options; components watching the same
 * target share one connection; a token function may change identity on every render.
 * @param {any} React
 */
export function createHooks(React) {
  const { useSyncExternalStore, useEffect } = React;
  /** @template S @param {Store<S>|null} store @param {S} idle @param {any} options @returns {S} */
  function useStore(store, idle, options) {
    useEffect(() => {
      if (store) store.setOptions(options);
    });
    const subscribe = store ? store.subscribe : noSubscription;
    const getSnapshot = store ? store.getSnapshot : () => idle;
    return useSyncExternalStore(subscribe, getSnapshot, () => idle);
  }
  return {
    /**
     * `{job, events, progress, status, error, connected}` of one job (idle while `id` is empty
     * or `enabled` is false).
     * @param {string|null|undefined} id
     * @param {WatchOptions & {enabled?: boolean, linger?: number, maxEvents?: number}} [options]
     * @returns {JobSnapshot}
     */
    useJob(id, options = {}) {
      const on = options.enabled !== false && typeof id === "string" && id !== "";
      return useStore(on ? jobStore(/** @type {string} */ (id), options) : null, IDLE_JOB, options);
    },
    /**
     * `{batch, items, status, error, connected}` of one batch.
     * @param {string|null|undefined} id @param {WatchOptions & {enabled?: boolean, linger?: number}} [options]
     * @returns {BatchSnapshot}
     */
    useBatch(id, options = {}) {
      const on = options.enabled !== false && typeof id === "string" && id !== "";
      return useStore(on ? batchStore(/** @type {string} */ (id), options) : null, IDLE_BATCH, options);
    },
    /**
     * `{jobs, error, connected}` of many jobs on one connection.
     * @param {JobsFilter|null|undefined} filter
     * @param {WatchOptions & {enabled?: boolean, linger?: number}} [options] @returns {JobsSnapshot}
     */
    useJobs(filter, options = {}) {
      const on = options.enabled !== false && filter != null;
      return useStore(on ? jobsStore(filter ?? {}, options) : null, IDLE_JOBS, options);
    },
  };
}
