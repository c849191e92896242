// The jobs page (`/`, `/jobs`): one page of jobs (cursor-paged, 50 at a time: it never loads
// them all), kept live by ONE multiplexed stream (`watchJobs`) that follows every job the
// filter matches. Updates are collected and applied at most every 250 ms (not at all in a
// hidden tab, nor while the table is frozen); jobs that start to match appear at the top of the
// first page. Filters live in the URL; actions per job, on the selection, and on everything
// that matches the filter.
//
// Nothing polls while the stream is open: the page of jobs is read again only when the filter
// or the page changes, when the stream (re)connects (events missed meanwhile are lost with a
// multiplexed stream), and after a bulk action.

import { Component } from "./vendor/preact.js";
import { watchJobs } from "./underway.js";
import {
  act,
  Ago,
  Bar,
  config,
  ConfirmButton,
  ErrorNote,
  formatNumber,
  href,
  html,
  Pager,
  setQuery,
  Status,
  useApp,
  useEffect,
  useLocation,
  useMemo,
  useRef,
  useState,
} from "./lib.js";

/** Jobs per page. */
const LIMIT = 50;
/** New jobs shown on the first page beyond its own LIMIT: more are counted, and "Show" reloads it. */
const MAX_NEW = 100;
/** Shortest time between two redraws of the table (ms). */
const REDRAW_MS = 250;
/** Events kept while frozen (or hidden); beyond, the page is read again when it shows them. */
const MAX_PENDING = 10000;
/** Wait this long for the stream before reading the page anyway (ms). */
const FIRST_LOAD_WAIT = 1000;
const STATUSES = ["queued", "running", "waiting", "succeeded", "failed", "cancelled"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const UNFINISHED = new Set(["queued", "running", "waiting"]);
/** The filter's parts, as the URL names them (`owner` for admins only). */
const FILTER_KEYS = ["status", "queue", "task", "batch", "label", "q", "owner"];

/**
 * The API filter the URL describes (empty parts left out).
 * @param {URLSearchParams} query @param {boolean} admin @returns {Record<string, string>}
 */
function filterOf(query, admin) {
  /** @type {Record<string, string>} */
  const filter = {};
  for (const key of FILTER_KEYS) {
    if (key === "owner" && !admin) continue;
    const value = (query.get(key) ?? "").trim();
    if (value) filter[key] = value;
  }
  return filter;
}

/**
 * A job's JSON after one event of it (pure; an event it already holds changes nothing).
 * @param {any} job @param {any} event
 */
export function applyEvent(job, event) {
  if (event.seq <= (job.last_seq ?? 0)) return job;
  const next = { ...job, last_seq: event.seq, updated_at: event.at };
  const data = event.data ?? {};
  if (event.type === "status") {
    if (data.status === "queued" && TERMINAL.has(job.status)) {
      Object.assign(next, { result: null, error: null, prompt: null, cancel_requested: false, finished_at: null });
    }
    next.status = data.status;
    next.attempt = data.attempt ?? job.attempt;
    if (data.cancel_requested) next.cancel_requested = true;
    if ("result" in data) next.result = data.result;
    if ("error" in data) next.error = data.error;
    if (data.status === "running" && !job.started_at) next.started_at = event.at;
    if (TERMINAL.has(data.status)) next.finished_at = event.at;
    if (data.status !== "waiting") next.prompt = null;
  } else if (event.type === "progress") {
    next.progress = data;
  } else if (event.type === "prompt") {
    next.prompt = data;
  } else if (event.type === "answer") {
    next.prompt = null;
  }
  return next;
}

/** A job's bar value: its percent; full once it succeeded; indeterminate while it runs without a total. */
export function percentOf(job) {
  const percent = job.progress?.percent;
  if (percent !== null && percent !== undefined) return percent;
  if (job.status === "succeeded") return 100;
  return job.status === "running" ? null : 0;
}

/** "3 jobs", "1 job". @param {number} n @param {string} [word] */
const count = (n, word = "job") => `${formatNumber(n)} ${word}${n === 1 ? "" : "s"}`;

/**
 * The table's data and its live updates, outside of Preact: the page of jobs, the events
 * waiting to be applied, the look-ups of jobs that start to match. `onChange` asks for a redraw.
 */
class LiveTable {
  /** @param {any} client @param {() => void} onChange */
  constructor(client, onChange) {
    this.client = client;
    this.onChange = onChange;
    /** @type {Map<string, any>} the rows by id */
    this.rows = new Map();
    /** @type {any[]} the rows, newest first (rebuilt when they change) */
    this.list = [];
    /** @type {Record<string, string>} */
    this.filter = {};
    /** @type {string|null} */
    this.cursor = null;
    /** @type {string|null} */
    this.nextCursor = null;
    this.loaded = false;
    this.loading = false;
    /** @type {unknown} */
    this.error = null;
    this.loadToken = 0;
    /** @type {any[]} events not applied yet */
    this.pending = [];
    /** too many events waited, or the stream reconnected while frozen: read the page again instead */
    this.stale = false;
    /** @type {any[]} jobs found by a look-up while frozen */
    this.pendingJobs = [];
    this.frozen = false;
    this.connected = false;
    this.everConnected = false;
    /** the stream has not connected since it was (re)opened: the first read waits for it */
    this.awaitingStream = false;
    this.loadWanted = false;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.waitTimer = null;
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.flushTimer = null;
    this.lastFlush = 0;
    /** @type {Set<string>} ids to look up */
    this.lookups = new Set();
    /** @type {Map<string, any[]>} events of jobs being looked up */
    this.lookingUp = new Map();
    /** @type {Set<string>} jobs looked up and too old for the first page */
    this.older = new Set();
    /** @type {ReturnType<typeof setTimeout>|null} */
    this.lookupTimer = null;
    /** new jobs not shown (past MAX_NEW) */
    this.hiddenNew = 0;
    /** @type {unknown} */
    this.streamError = null;
    this.closed = false;
    this.visible = () => {
      if (!document.hidden) this.schedule();
    };
    document.addEventListener("visibilitychange", this.visible);
  }

  close() {
    this.closed = true;
    document.removeEventListener("visibilitychange", this.visible);
    for (const timer of [this.waitTimer, this.flushTimer, this.lookupTimer]) if (timer) clearTimeout(timer);
  }

  get firstPage() {
    return this.cursor === null;
  }

  /** A new filter or page: read it (once the stream is there, if it is being opened). */
  /** @param {Record<string, string>} filter @param {string|null} cursor */
  show(filter, cursor) {
    this.filter = filter;
    this.cursor = cursor;
    this.older.clear();
    this.lookups.clear();
    this.hiddenNew = 0;
    if (this.awaitingStream) {
      this.loadWanted = true;
      this.loading = true;
      this.onChange();
    } else {
      this.load();
    }
  }

  /** The stream was (re)opened for a new filter: wait for it before reading the page. */
  streamOpened() {
    this.connected = false;
    this.awaitingStream = true;
    this.streamError = null;
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimer = setTimeout(() => this.streamReady(), FIRST_LOAD_WAIT);
  }

  streamReady() {
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimer = null;
    this.awaitingStream = false;
    if (this.loadWanted) this.load();
  }

  /** @param {boolean} connected */
  connection(connected) {
    this.connected = connected;
    if (connected) {
      this.streamError = null;
      const waited = this.awaitingStream;
      this.everConnected = true;
      if (waited) this.streamReady();
      else if (this.frozen) this.stale = true; // read again once unfrozen
      else this.load(); // a reconnect: what happened meanwhile is not replayed
    }
    this.onChange();
  }

  /** @param {any} error */
  streamFailed(error) {
    if (error?.fatal) {
      this.streamError = error;
      this.streamReady();
      this.onChange();
    }
  }

  /** Read the current page again (after a bulk action, a reconnect). */
  async load() {
    this.loadWanted = false;
    const token = ++this.loadToken;
    this.loading = true;
    this.onChange();
    let answer;
    try {
      answer = await this.client.list({ ...this.filter, limit: LIMIT, cursor: this.cursor ?? undefined });
    } catch (error) {
      if (token !== this.loadToken || this.closed) return;
      this.loading = false;
      this.error = error;
      this.onChange();
      return;
    }
    if (token !== this.loadToken || this.closed) return;
    this.loading = false;
    this.loaded = true;
    this.error = null;
    this.hiddenNew = 0;
    this.rows = new Map(answer.jobs.map((/** @type {any} */ job) => [job.id, job]));
    this.nextCursor = answer.next_cursor ?? null;
    this.pendingJobs = [];
    if (!this.frozen) {
      this.stale = false;
    }
    this.rebuild();
    // the events that came while it was read apply now (those it holds already change nothing)
    this.flush();
  }

  rebuild() {
    this.list = [...this.rows.values()].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  /** One event of the stream. @param {any} event */
  receive(event) {
    const waiting = this.lookingUp.get(event.job_id);
    if (waiting) {
      if (waiting.length < 200) waiting.push(event);
      return;
    }
    if (this.pending.length >= MAX_PENDING) {
      this.stale = true;
      this.pending = [];
    }
    this.pending.push(event);
    this.schedule();
  }

  schedule() {
    if (this.flushTimer || this.closed) return;
    const wait = Math.max(0, REDRAW_MS - (performance.now() - this.lastFlush));
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, wait);
  }

  /** Whether an event of a job not shown may bring it onto the page. @param {any} event */
  candidate(event) {
    if (!this.firstPage || event.type !== "status") return false;
    if (this.older.has(event.job_id)) return false;
    const wanted = this.filter.status;
    return !wanted || event.data?.status === wanted;
  }

  /** The updates a click on the freeze switch would apply (-1: more than it keeps). */
  get pendingCount() {
    if (this.stale) return -1;
    let n = this.pendingJobs.length;
    for (const event of this.pending) if (this.rows.has(event.job_id) || this.candidate(event)) n += 1;
    return n;
  }

  /** Apply what waits, unless the table is frozen, hidden or being read. */
  flush() {
    if (this.closed || this.loading) return;
    if (this.frozen) {
      this.lastFlush = performance.now();
      this.onChange(); // the count of what waits
      return;
    }
    if (document.hidden) return; // visibilitychange schedules it again
    this.lastFlush = performance.now();
    if (this.stale) {
      this.stale = false;
      this.pending = [];
      this.load();
      return;
    }
    const events = this.pending;
    this.pending = [];
    let changed = false;
    for (const event of events) {
      const row = this.rows.get(event.job_id);
      if (row) {
        const next = applyEvent(row, event);
        if (next !== row) {
          this.rows.set(event.job_id, next);
          changed = true;
        }
      } else if (this.candidate(event)) {
        this.lookups.add(event.job_id);
      }
    }
    if (this.pendingJobs.length) {
      const found = this.pendingJobs;
      this.pendingJobs = [];
      if (this.insert(found)) changed = true;
    }
    if (changed) this.rebuild();
    if (this.lookups.size && !this.lookupTimer) this.lookupTimer = setTimeout(() => this.lookUp(), 50);
    this.onChange();
  }

  /** Read the jobs that may start to match, 100 at a time, with the whole filter. */
  async lookUp() {
    this.lookupTimer = null;
    const ids = [...this.lookups].filter((id) => !this.rows.has(id)).slice(0, 100);
    for (const id of ids) {
      this.lookups.delete(id);
      this.lookingUp.set(id, []);
    }
    if (this.lookups.size) this.lookupTimer = setTimeout(() => this.lookUp(), 50);
    if (!ids.length) return;
    const token = this.loadToken;
    /** @type {any[]} */
    let found = [];
    try {
      const answer = await this.client.list({ ...this.filter, ids, limit: ids.length });
      found = answer.jobs;
    } catch {
      // a job deleted meanwhile, say: the next event of it tries again
    }
    /** @type {any[]} */
    const jobs = [];
    for (const id of ids) {
      const later = this.lookingUp.get(id) ?? [];
      this.lookingUp.delete(id);
      const job = found.find((one) => one.id === id);
      if (!job || token !== this.loadToken) continue;
      jobs.push(later.reduce(applyEvent, job));
    }
    if (this.closed || !jobs.length) return;
    if (this.frozen) {
      this.pendingJobs.push(...jobs);
      this.onChange();
      return;
    }
    if (this.insert(jobs)) {
      this.rebuild();
      this.onChange();
    }
  }

  /**
   * Put jobs that match on the first page, where they belong (newer than its oldest row, or
   * anywhere when it holds the last one); true if one was. @param {any[]} jobs
   */
  insert(jobs) {
    if (!this.firstPage) return false;
    const oldest = this.list.length ? this.list[this.list.length - 1].id : null;
    let changed = false;
    for (const job of jobs) {
      const current = this.rows.get(job.id);
      if (current) {
        if ((job.last_seq ?? 0) > (current.last_seq ?? 0)) {
          this.rows.set(job.id, job);
          changed = true;
        }
        continue;
      }
      if (this.nextCursor !== null && oldest !== null && job.id < oldest) {
        this.older.add(job.id);
        if (this.older.size > 5000) this.older.clear();
        continue;
      }
      if (this.rows.size >= LIMIT + MAX_NEW) {
        this.hiddenNew += 1;
        continue;
      }
      this.rows.set(job.id, job);
      changed = true;
    }
    return changed;
  }

  /** @param {boolean} frozen */
  freeze(frozen) {
    this.frozen = frozen;
    if (frozen) this.onChange();
    else this.flush();
  }
}

/**
 * A text filter that sets its part of the URL once typing pauses (replacing the history entry).
 * @param {{name: string, label: string, value: string, placeholder?: string, list?: string,
 *   type?: string, wide?: boolean}} props
 */
function FilterInput({ name, label, value, placeholder, list, type, wide }) {
  const [text, setText] = useState(value);
  const sent = useRef(value);
  const timer = useRef(/** @type {ReturnType<typeof setTimeout>|null} */ (null));
  useEffect(() => {
    // the URL changed by itself (back, a link): show it
    if (value !== sent.current) {
      sent.current = value;
      setText(value);
    }
  }, [value]);
  useEffect(() => () => timer.current && clearTimeout(timer.current), []);
  const send = (/** @type {string} */ now) => {
    if (timer.current) clearTimeout(timer.current);
    timer.current = null;
    const trimmed = now.trim();
    if (trimmed === sent.current) return;
    sent.current = trimmed;
    setQuery({ [name]: trimmed }, { replace: true });
  };
  return html`<label class=${wide ? "jobs-search" : ""}>
    <span>${label}</span>
    <input
      type=${type ?? "text"}
      name=${name}
      value=${text}
      placeholder=${placeholder}
      list=${list}
      aria-label=${label}
      autocomplete="off"
      spellcheck=${false}
      onInput=${(/** @type {any} */ event) => {
        const now = event.currentTarget.value;
        setText(now);
        if (timer.current) clearTimeout(timer.current);
        timer.current = setTimeout(() => send(now), 300);
      }}
      onKeyDown=${(/** @type {KeyboardEvent} */ event) => {
        if (event.key === "Enter") send(/** @type {HTMLInputElement} */ (event.currentTarget).value);
      }}
    />
  </label>`;
}

/**
 * One row. Rows whose job, selection and clock did not change are not drawn again.
 * @extends {Component<any>}
 */
class JobRow extends Component {
  /** @param {any} next */
  shouldComponentUpdate(next) {
    const p = /** @type {any} */ (this.props);
    return (
      next.job !== p.job ||
      next.selected !== p.selected ||
      next.tick !== p.tick ||
      next.admin !== p.admin ||
      next.canCancel !== p.canCancel ||
      next.canRetry !== p.canRetry
    );
  }

  render() {
    const { job, selected, onSelect, onCancel, onRetry, admin, canCancel, canRetry } = /** @type {any} */ (
      this.props
    );
    const percent = percentOf(job);
    const message = job.progress?.message;
    const total = job.progress?.total;
    const cancellable = UNFINISHED.has(job.status);
    const retryable = job.status === "failed" || job.status === "cancelled";
    const link = href(`/jobs/${encodeURIComponent(job.id)}`);
    return html`<tr data-job-id=${job.id} data-status=${job.status} class=${selected ? "selected" : ""}>
      ${canCancel || canRetry
        ? html`<td class="jobs-check">
            <input type="checkbox" checked=${selected} aria-label=${`Select job ${job.id}`}
              onChange=${(/** @type {any} */ event) => onSelect(job.id, event.currentTarget.checked)} />
          </td>`
        : null}
      <td class="jobs-id">
        <a class="mono" href=${link} title=${job.id}>${job.id}</a>
        <span class="jobs-narrow muted">${job.task}</span>
      </td>
      <td class="hide-narrow">${job.task}</td>
      <td class="hide-narrow">${job.queue}</td>
      <td class="jobs-status"><${Status} status=${job.status} />${job.cancel_requested && cancellable
          ? html`<span class="jobs-flag" title="cancel requested">stopping</span>`
          : null}</td>
      <td class="jobs-progress">
        <div class="jobs-bar">
          <${Bar} percent=${percent} status=${job.status} label=${`progress of ${job.id}`} />
          <span class="jobs-percent">${percent === null ? "" : `${Math.round(percent)} %`}</span>
        </div>
        <div class="jobs-message" title=${message ?? ""}>
          ${message ?? (total === null || total === undefined ? "" : `${formatNumber(job.progress?.current)} / ${formatNumber(total)}`)}
        </div>
      </td>
      <td class="hide-narrow num">${job.attempt}<span class="muted">/${job.max_attempts}</span></td>
      ${admin ? html`<td class="hide-narrow">${job.owner ?? html`<span class="muted">–</span>`}</td>` : null}
      <td class="hide-narrow jobs-time"><${Ago} at=${job.created_at} /></td>
      <td class="hide-narrow jobs-time"><${Ago} at=${job.updated_at} /></td>
      <td class="jobs-actions">
        ${canCancel && cancellable
          ? html`<button type="button" class="small" disabled=${job.cancel_requested}
              aria-label=${`Cancel job ${job.id}`} onClick=${() => onCancel(job.id)}>Cancel</button>`
          : null}
        ${canRetry && retryable
          ? html`<button type="button" class="small" aria-label=${`Retry job ${job.id}`}
              onClick=${() => onRetry(job.id)}>Retry</button>`
          : null}
      </td>
    </tr>`;
  }
}

/** The jobs page. */
export function JobsPage() {
  const app = useApp();
  const { client, me } = app;
  const admin = me.role === "admin";
  const canCancel = Boolean(me.can?.cancel);
  const canRetry = Boolean(me.can?.write);
  const { query } = useLocation();
  const filter = filterOf(query, admin);
  const filterKey = JSON.stringify(filter);
  const { status: _status, owner: _owner, ...streamFilter } = filter;
  const streamKey = JSON.stringify(streamFilter);

  const [, redraw] = useState(0);
  const table = useMemo(() => new LiveTable(client, () => redraw((n) => n + 1)), [client]);
  useEffect(() => () => table.close(), [table]);

  // the cursors of the pages seen, kept for the filter they belong to
  const [paging, setPaging] = useState({ key: filterKey, cursors: /** @type {(string|null)[]} */ ([null]) });
  const cursors = paging.key === filterKey ? paging.cursors : [null];
  const cursor = cursors[cursors.length - 1];
  const [selected, setSelected] = useState(/** @type {Set<string>} */ (new Set()));
  const [frozen, setFrozen] = useState(false);
  const [tick, setTick] = useState(0);

  // one stream for every job the filter matches (a stream takes no status: its jobs move on)
  useEffect(() => {
    table.streamOpened();
    const watch = watchJobs(streamFilter, {
      baseUrl: new URL(config.api, location.href).href,
      onEvent: (event) => table.receive(event),
      onConnection: (connected) => table.connection(connected),
      onError: (error) => table.streamFailed(error),
    });
    return () => watch.close();
  }, [table, streamKey]);

  useEffect(() => {
    table.show(filter, cursor);
    setSelected(new Set());
  }, [table, filterKey, cursor]);

  // "12 s ago" moves on (a redraw, no request)
  useEffect(() => {
    const timer = setInterval(() => !document.hidden && setTick((n) => n + 1), 15000);
    return () => clearInterval(timer);
  }, []);

  // what the filters may name
  const [known, setKnown] = useState({ tasks: /** @type {string[]} */ ([]), queues: /** @type {string[]} */ ([]) });
  useEffect(() => {
    Promise.allSettled([client.tasks(), client.queues()]).then(([tasks, queues]) => {
      setKnown({
        tasks: tasks.status === "fulfilled" ? tasks.value.tasks.map((/** @type {any} */ t) => t.name) : [],
        queues: queues.status === "fulfilled" ? queues.value.queues.map((/** @type {any} */ q) => q.name) : [],
      });
    });
  }, [client]);

  const rows = table.list;
  const onSelect = useMemo(
    () => (/** @type {string} */ id, /** @type {boolean} */ on) =>
      setSelected((before) => {
        const next = new Set(before);
        if (on) next.add(id);
        else next.delete(id);
        return next;
      }),
    [],
  );
  const onCancel = useMemo(
    () => (/** @type {string} */ id) => act(app, () => client.cancel(id), `Cancel requested for ${id}`),
    [app, client],
  );
  const onRetry = useMemo(
    () => (/** @type {string} */ id) => act(app, () => client.retry(id), `Retrying ${id}`),
    [app, client],
  );

  const shownIds = rows.map((job) => job.id);
  const chosen = shownIds.filter((id) => selected.has(id));
  const allChosen = shownIds.length > 0 && chosen.length === shownIds.length;
  const bulk = async (/** @type {() => Promise<any>} */ change, /** @type {(r: any) => string} */ done) => {
    const result = await act(app, change, done);
    if (result !== undefined) {
      setSelected(new Set());
      table.load();
    }
  };
  const filtered = Object.keys(filter).length > 0;
  const pending = frozen ? table.pendingCount : 0;
  const changeControls = canCancel || canRetry;
  const columns = 9 + (admin ? 1 : 0) + (changeControls ? 1 : 0);

  return html`<section class="jobs-page">
    <div class="jobs-head">
      <h1>Jobs</h1>
      <span class=${`live${table.connected ? " on" : ""}`} role="status"
        title=${table.connected ? "updates arrive as they happen" : "the live stream is not connected"}>
        ${table.connected ? "live" : table.everConnected ? "reconnecting" : "connecting"}
      </span>
      <span class="grow"></span>
      <label class="switch jobs-freeze">
        <input type="checkbox" checked=${frozen} onChange=${(/** @type {any} */ event) => {
          const on = event.currentTarget.checked;
          setFrozen(on);
          table.freeze(on);
        }} />
        Freeze
      </label>
      ${frozen
        ? html`<span class="jobs-pending" aria-live="polite">${
            pending < 0 ? "Many updates pending" : `${count(pending, "update")} pending`
          }</span>`
        : null}
    </div>

    <form class="filters jobs-filters" role="search" onSubmit=${(/** @type {Event} */ e) => e.preventDefault()}>
      <${FilterInput} name="q" label="Search" value=${query.get("q") ?? ""} wide=${true} type="search"
        placeholder="job id or text in the arguments" />
      <label>
        <span>Status</span>
        <select name="status" aria-label="Status" value=${filter.status ?? ""}
          onChange=${(/** @type {any} */ e) => setQuery({ status: e.currentTarget.value })}>
          <option value="">any</option>
          ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
        </select>
      </label>
      <${FilterInput} name="task" label="Task" value=${query.get("task") ?? ""} list="jobs-known-tasks" placeholder="any" />
      <${FilterInput} name="queue" label="Queue" value=${query.get("queue") ?? ""} list="jobs-known-queues" placeholder="any" />
      <${FilterInput} name="label" label="Label" value=${query.get("label") ?? ""} placeholder="key:value" />
      <${FilterInput} name="batch" label="Batch" value=${query.get("batch") ?? ""} placeholder="batch id" />
      ${admin ? html`<${FilterInput} name="owner" label="Owner" value=${query.get("owner") ?? ""} placeholder="anyone" />` : null}
      ${filtered
        ? html`<button type="button" class="link jobs-clear"
            onClick=${() => setQuery(Object.fromEntries(FILTER_KEYS.map((k) => [k, null])))}>Clear filters</button>`
        : null}
      <datalist id="jobs-known-tasks">${known.tasks.map((t) => html`<option value=${t}></option>`)}</datalist>
      <datalist id="jobs-known-queues">${known.queues.map((q) => html`<option value=${q}></option>`)}</datalist>
    </form>

    ${changeControls
      ? html`<div class="toolbar jobs-bulk" role="group" aria-label="Actions on many jobs">
          <span class="muted">${chosen.length ? `${count(chosen.length)} selected` : "Nothing selected"}</span>
          ${canCancel
            ? html`<button type="button" disabled=${!chosen.length}
                onClick=${() => bulk(() => client.cancelAll({ ids: chosen }), (r) => `Cancelled ${count(r.cancelled)}`)}>Cancel selected</button>`
            : null}
          ${canRetry
            ? html`<button type="button" disabled=${!chosen.length}
                onClick=${() => bulk(() => client.retryAll({ ids: chosen }), (r) => `Retried ${count(r.retried)}`)}>Retry selected</button>`
            : null}
          <span class="grow"></span>
          ${canCancel
            ? html`<${ConfirmButton} label="Cancel all matching" danger=${true}
                confirm=${filtered ? "Cancel every unfinished job matching the filter?" : "Cancel every unfinished job?"}
                onConfirm=${() => bulk(() => client.cancelAll(filter), (r) => `Cancelled ${count(r.cancelled)}`)} />`
            : null}
          ${canRetry
            ? html`<${ConfirmButton} label="Retry all failed matching"
                confirm=${filtered ? "Retry every failed job matching the filter?" : "Retry every failed job?"}
                onConfirm=${() =>
                  bulk(() => client.retryAll({ ...filter, status: ["failed"] }), (r) => `Retried ${count(r.retried)}`)} />`
            : null}
        </div>`
      : null}

    <${ErrorNote} error=${table.error} />
    ${table.streamError
      ? html`<p class="alert" role="alert">Live updates stopped: ${
          /** @type {any} */ (table.streamError).message
        }. Reload the page to try again.</p>`
      : null}
    ${table.hiddenNew > 0 && cursor === null
      ? html`<p class="jobs-notice">
          ${count(table.hiddenNew, "more new job")} not shown.
          <button type="button" class="link" onClick=${() => table.load()}>Show the newest</button>
        </p>`
      : null}

    <div class="table-wrap">
      <table id="jobs" class="grid jobs-table" aria-busy=${table.loading ? "true" : "false"}>
        <thead>
          <tr>
            ${changeControls
              ? html`<th class="jobs-check">
                  <input type="checkbox" aria-label="Select all on page" checked=${allChosen}
                    disabled=${!shownIds.length}
                    onChange=${(/** @type {any} */ e) => setSelected(e.currentTarget.checked ? new Set(shownIds) : new Set())} />
                </th>`
              : null}
            <th scope="col" class="jobs-id">Job</th>
            <th scope="col" class="hide-narrow">Task</th>
            <th scope="col" class="hide-narrow">Queue</th>
            <th scope="col" class="jobs-status">Status</th>
            <th scope="col" class="jobs-progress">Progress</th>
            <th scope="col" class="hide-narrow num" title="attempt / most attempts">Attempt</th>
            ${admin ? html`<th scope="col" class="hide-narrow">Owner</th>` : null}
            <th scope="col" class="hide-narrow">Created</th>
            <th scope="col" class="hide-narrow">Updated</th>
            <th scope="col" class="jobs-actions"><span class="jobs-sr">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          ${rows.map(
            (job) => html`<${JobRow} key=${job.id} job=${job} selected=${selected.has(job.id)} tick=${tick}
              admin=${admin} canCancel=${canCancel} canRetry=${canRetry}
              onSelect=${onSelect} onCancel=${onCancel} onRetry=${onRetry} />`,
          )}
          ${rows.length === 0
            ? html`<tr class="jobs-empty-row">
                <td colspan=${columns} class="empty">
                  ${!table.loaded
                    ? table.error
                      ? "The jobs could not be read."
                      : "Loading jobs…"
                    : filtered
                      ? "No job matches these filters."
                      : cursor === null
                        ? "No jobs yet: submit one and it shows up here at once."
                        : "No older jobs."}
                </td>
              </tr>`
            : null}
        </tbody>
      </table>
    </div>
    <${Pager}
      label="pages of jobs"
      newer=${cursors.length > 1}
      older=${table.loaded && table.nextCursor !== null}
      onNewer=${() => setPaging({ key: filterKey, cursors: cursors.slice(0, -1) })}
      onOlder=${() => setPaging({ key: filterKey, cursors: [...cursors, table.nextCursor] })}
    />
  </section>`;
}
