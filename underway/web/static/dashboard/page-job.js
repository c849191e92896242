// The job page (`/jobs/{id}`): the job's record (`GET /jobs/{id}`, read again when its status
// changes) and ONE stream of its events from the first (`watchJob(id, {after: 0})`), from
// which come the live progress, the logs, the question, the attempts and the events timeline.
// Every job-provided string (logs, messages, arguments, results, errors, labels) is text.

import { jobState, watchJob } from "./underway.js";
import {
  act,
  Ago,
  Bar,
  config,
  ConfirmButton,
  ErrorNote,
  formatDuration,
  formatNumber,
  href,
  html,
  Json,
  messageOf,
  navigate,
  setQuery,
  Status,
  useApp,
  useEffect,
  useLocation,
  useMemo,
  useRef,
  useState,
} from "./lib.js";
import { FieldInput, fieldOf, fieldsOf, initialTexts, readFields } from "./schema-form.js";

/** Events kept for the timeline, log lines kept, status events kept (for the attempts). */
const MAX_EVENTS = 1000;
const MAX_LOGS = 1000;
const MAX_STATUSES = 1000;
const LEVELS = ["debug", "info", "warning", "error"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const UNFINISHED = new Set(["queued", "running", "waiting"]);

/** "14:03:07.123" @param {string} at */
function clock(at) {
  const date = new Date(at);
  const ms = String(date.getMilliseconds()).padStart(3, "0");
  return `${date.toLocaleTimeString([], { hour12: false })}.${ms}`;
}

/** A short JSON text of a value, for one line. @param {any} value */
function brief(value, most = 120) {
  let text;
  try {
    text = typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  text = text ?? "null";
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}

/** What a status change was for, in words. @param {any} data */
function reasonText(data) {
  switch (data.reason) {
    case "retry":
      return data.error ? "failed; another attempt follows" : "run again by hand";
    case "attempts_exhausted":
      return "failed on its last attempt";
    case "non_retryable":
      return "failed with an error no retry can fix";
    case "lease_expired":
      return "its worker stopped answering (lease expired)";
    case "worker_shutdown":
      return "its worker shut down";
    case "cancelled":
      return "stopped after a cancel request";
    case "cancel_grace":
      return "still running after the cancel grace: cancelled";
    case "ask":
      return "asked a question";
    case "ask_timeout":
      return "the question timed out";
    default:
      return data.reason ?? "";
  }
}

/** One line about an event. @param {any} event */
function summary(event) {
  const data = event.data ?? {};
  switch (event.type) {
    case "status": {
      if (data.cancel_requested) return "cancel requested";
      const parts = [`${data.status} (attempt ${data.attempt ?? 0})`];
      const reason = reasonText(data);
      if (reason) parts.push(reason);
      if (data.error) parts.push(`${data.error.type}: ${data.error.message}`);
      if ("result" in data) parts.push(`result ${brief(data.result, 80)}`);
      return parts.join(" · ");
    }
    case "progress": {
      const parts = [];
      if (data.step) parts.push(`step ${data.step}${data.steps ? ` of ${data.steps}` : ""}`);
      if (data.total !== null && data.total !== undefined) {
        parts.push(`${formatNumber(data.current)} / ${formatNumber(data.total)}`);
      } else if (data.current !== null && data.current !== undefined) parts.push(formatNumber(data.current));
      if (data.percent !== null && data.percent !== undefined) parts.push(`${data.percent} %`);
      if (data.message) parts.push(data.message);
      return parts.join(" · ");
    }
    case "log":
      return `${data.level}: ${data.message}`;
    case "prompt":
      return `asked: ${data.message}`;
    case "answer":
      return `answered ${brief(data.value, 80)}`;
    default:
      return brief(data);
  }
}

/**
 * The attempts, from the status events: when each started, how it ended and why; manual
 * retries and cancels between them.
 * @param {any[]} statuses
 */
function attemptsOf(statuses) {
  /** @type {any[]} */
  const rows = [];
  /** @type {any} */
  let current = null;
  for (const event of statuses) {
    const data = event.data ?? {};
    if (data.cancel_requested) {
      if (current) current.cancelAsked = event.at;
      continue;
    }
    if (data.status === "running") {
      if (!current || current.attempt !== data.attempt) {
        current = { kind: "attempt", attempt: data.attempt, started: event.at, ended: null, outcome: null };
        rows.push(current);
      }
      continue;
    }
    if (data.status === "waiting") continue;
    if (current && !current.ended) {
      Object.assign(current, {
        ended: event.at,
        outcome: data.status,
        reason: reasonText(data),
        error: data.error ?? null,
        runAt: data.run_at ?? null,
      });
      if (data.status === "queued") current = null;
      continue;
    }
    if (data.status === "queued" && event.seq > 1) {
      rows.push({ kind: "note", at: event.at, text: reasonText(data) || "queued again" });
      current = null;
    } else if (data.status === "cancelled") {
      rows.push({ kind: "note", at: event.at, text: "cancelled before it ran" });
    }
  }
  return rows;
}

/**
 * The fields of an answer's form: an object's properties, or one field for the value itself
 * (`single`; a text when the question has no schema).
 * @param {any} schema
 */
function answerFieldsOf(schema) {
  if (schema?.type === "object" && schema.properties && typeof schema.properties === "object") {
    return { single: false, fields: fieldsOf(schema) };
  }
  const field = fieldOf("value", schema ?? { type: "string" }, schema, { required: true, title: "Answer" });
  return { single: true, fields: [field] };
}

/**
 * The question a waiting job asks: options as buttons, a form from its JSON schema, or a text.
 * @param {{prompt: any, onAnswer: (value: any, key: string) => Promise<any>, canAnswer: boolean}} props
 */
function Question({ prompt, onAnswer, canAnswer }) {
  const [busy, setBusy] = useState(false);
  const send = async (/** @type {any} */ value) => {
    setBusy(true);
    const done = await onAnswer(value, prompt.key);
    if (done === undefined) setBusy(false); // refused: the toast said why
  };
  const options = Array.isArray(prompt.options) ? prompt.options : null;
  const schema = prompt.schema && typeof prompt.schema === "object" ? prompt.schema : null;
  let body;
  if (!canAnswer) {
    body = html`<p class="muted">You may not answer it.</p>`;
  } else if (options) {
    body = html`<div class="job-options" role="group" aria-label="Answers">
      ${options.map(
        (/** @type {any} */ option) =>
          html`<button type="button" class="primary" disabled=${busy} onClick=${() => send(option)}>${
            typeof option === "string" ? option : JSON.stringify(option)
          }</button>`,
      )}
    </div>`;
  } else {
    body = html`<${AnswerForm} schema=${schema} busy=${busy} onSend=${send} />`;
  }
  return html`<section class="card job-question" aria-labelledby="job-question-title">
    <h2 id="job-question-title">Question</h2>
    <p class="job-question-text">${prompt.message}</p>
    ${body}
  </section>`;
}

/**
 * The form of a structured answer. What was typed lives in its state, so the page's redraws (an
 * event, a change of the log level) never reset it. The API does not check an answer against
 * its schema: this form has no `novalidate`, so the browser checks the required fields and the
 * schema's limits (minimum, maximum, whole numbers, lengths) before it is sent.
 * @param {{schema: any, busy: boolean, onSend: (value: any) => void}} props
 */
function AnswerForm({ schema, busy, onSend }) {
  const { fields, single } = useMemo(() => answerFieldsOf(schema), [schema]);
  const [texts, setTexts] = useState(() => initialTexts(fields));
  const [errors, setErrors] = useState(/** @type {Record<string, string>} */ ({}));
  /** @param {SubmitEvent} event */
  const submit = (event) => {
    event.preventDefault();
    const { values, errors: found } = readFields(fields, texts);
    setErrors(found);
    const wrong = fields.find((field) => found[field.name]);
    if (wrong) document.getElementById(`answer-${wrong.name}`)?.focus();
    else onSend(single ? values.value : values);
  };
  return html`<form class="job-answer" onSubmit=${submit}>
    ${fields.map(
      (field) => html`<${FieldInput} key=${field.name} field=${field} prefix="answer" value=${texts[field.name]}
        error=${errors[field.name]}
        onChange=${(/** @type {any} */ v) => setTexts((before) => ({ ...before, [field.name]: v }))} />`,
    )}
    <div><button type="submit" class="primary" disabled=${busy}>Answer</button></div>
  </form>`;
}

/**
 * The live logs with their level filter (`level` in the URL) and follow mode.
 * @param {{logs: any[], dropped: number, level: string, finished: boolean}} props
 */
function Logs({ logs, dropped, level, finished }) {
  const [follow, setFollow] = useState(true);
  const box = useRef(/** @type {HTMLElement|null} */ (null));
  const shown = level === "all" ? logs : logs.filter((event) => event.data?.level === level);
  const last = shown.length ? shown[shown.length - 1].seq : 0;
  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [follow, last, level]);
  return html`<section class="card job-logs" aria-labelledby="job-logs-title">
    <div class="job-section-head">
      <h2 id="job-logs-title">Logs</h2>
      <span class="grow"></span>
      <label class="job-inline">
        <span>Level</span>
        <select name="level" aria-label="Level" value=${level}
          onChange=${(/** @type {any} */ e) => setQuery({ level: e.currentTarget.value === "all" ? null : e.currentTarget.value }, { replace: true })}>
          <option value="all">all</option>
          ${LEVELS.map((l) => html`<option value=${l}>${l}</option>`)}
        </select>
      </label>
      <label class="switch">
        <input type="checkbox" checked=${follow} onChange=${(/** @type {any} */ e) => setFollow(e.currentTarget.checked)} />
        Follow
      </label>
    </div>
    ${dropped > 0 ? html`<p class="muted">The ${formatNumber(dropped)} oldest lines are not shown.</p>` : null}
    <ol class="job-log-lines" ref=${box} tabindex="0" aria-label="Log lines">
      ${shown.map(
        (event) => html`<li key=${event.seq} class=${`job-log level-${event.data?.level}`} data-level=${event.data?.level}>
          <time datetime=${event.at}>${clock(event.at)}</time>
          <span class="job-level">${event.data?.level}</span>
          <span class="job-log-message">${event.data?.message}</span>
          ${event.data?.fields && Object.keys(event.data.fields).length
            ? html`<span class="job-log-fields">${brief(event.data.fields, 300)}</span>`
            : null}
        </li>`,
      )}
    </ol>
    ${shown.length === 0
      ? html`<p class="empty">${logs.length ? `No ${level} lines.` : finished ? "No log lines." : "No log lines yet."}</p>`
      : null}
  </section>`;
}

/** The events timeline, drawn only while it is open. @param {{events: any[], total: number}} props */
function Timeline({ events, total }) {
  const [open, setOpen] = useState(false);
  return html`<details class="card job-timeline" open=${open}
    onToggle=${(/** @type {any} */ e) => setOpen(e.currentTarget.open)}>
    <summary><h2>Events <span class="muted">(${formatNumber(total)})</span></h2></summary>
    ${open
      ? html`${total > events.length
            ? html`<p class="muted">The last ${formatNumber(events.length)} of ${formatNumber(total)} events.</p>`
            : null}
          <div class="table-wrap">
            <table class="grid job-events">
              <thead><tr><th scope="col" class="num">Seq</th><th scope="col">Time</th><th scope="col">Type</th><th scope="col">What</th></tr></thead>
              <tbody>
                ${events.map(
                  (event) => html`<tr key=${event.seq} data-seq=${event.seq} data-type=${event.type}>
                    <td class="num">${event.seq}</td>
                    <td class="job-nowrap"><time datetime=${event.at} title=${new Date(event.at).toLocaleString()}>${clock(event.at)}</time></td>
                    <td><span class=${`job-type type-${event.type}`}>${event.type}</span></td>
                    <td class="job-summary">${summary(event)}</td>
                  </tr>`,
                )}
              </tbody>
            </table>
          </div>`
      : null}
  </details>`;
}

/** @param {{rows: any[]}} props */
function Attempts({ rows }) {
  if (!rows.length) return null;
  return html`<section class="card job-attempts" aria-labelledby="job-attempts-title">
    <h2 id="job-attempts-title">Attempts</h2>
    <div class="table-wrap">
      <table class="grid">
        <thead><tr><th scope="col" class="num">#</th><th scope="col">Started</th><th scope="col">Ended</th><th scope="col">Outcome</th><th scope="col">Why</th></tr></thead>
        <tbody>
          ${rows.map((row, i) =>
            row.kind === "note"
              ? html`<tr key=${`n${i}`} class="job-note"><td></td><td><${Ago} at=${row.at} /></td><td></td><td></td><td>${row.text}</td></tr>`
              : html`<tr key=${`a${i}`} data-attempt=${row.attempt}>
                  <td class="num">${row.attempt}</td>
                  <td><${Ago} at=${row.started} /></td>
                  <td>${row.ended ? html`<${Ago} at=${row.ended} />` : html`<span class="muted">running</span>`}</td>
                  <td>${row.outcome === "queued"
                    ? html`<span class="badge status-queued">requeued</span>`
                    : row.outcome
                      ? html`<${Status} status=${row.outcome} />`
                      : null}</td>
                  <td class="job-why">
                    ${row.reason}${row.error ? html`<div class="job-error-line">${row.error.type}: ${row.error.message}</div>` : null}
                    ${row.runAt ? html`<div class="muted">next attempt <${Ago} at=${row.runAt} /></div>` : null}
                  </td>
                </tr>`,
          )}
        </tbody>
      </table>
    </div>
  </section>`;
}

/** The step's name: the message it started with (`ctx.step(name)` sets it, at 0 of nothing). */
function stepLine(/** @type {any} */ progress, /** @type {Record<number, string>} */ names) {
  if (!progress?.step) return null;
  const name = names[progress.step];
  return `step ${progress.step}${progress.steps ? ` of ${progress.steps}` : ""}${name ? `: ${name}` : ""}`;
}

/** The job page. @param {{id: string}} props */
export function JobPage({ id }) {
  const app = useApp();
  const { client, me } = app;
  const { query } = useLocation();
  const level = LEVELS.includes(query.get("level") ?? "") ? /** @type {string} */ (query.get("level")) : "all";
  const [job, setJob] = useState(/** @type {any} */ (null));
  const [problem, setProblem] = useState(/** @type {any} */ (null));
  const [live, setLive] = useState(/** @type {any} */ (null));
  const [connected, setConnected] = useState(false);
  const wasConnected = useRef(false);
  const [ended, setEnded] = useState(false);
  const [run, setRun] = useState(0);
  const [, redraw] = useState(0);
  const feed = useRef({
    /** @type {any[]} */ events: [],
    /** @type {any[]} */ logs: [],
    /** @type {any[]} */ statuses: [],
    total: 0,
    droppedLogs: 0,
    lastSeq: 0,
    /** @type {Record<number, string>} */ stepNames: {},
  });
  const reading = useRef({ busy: false, again: false });

  /** Read the job again (one request at a time; once more if asked meanwhile). */
  const refresh = async () => {
    if (reading.current.busy) {
      reading.current.again = true;
      return;
    }
    reading.current.busy = true;
    try {
      do {
        reading.current.again = false;
        try {
          const found = await client.get(id);
          setJob(found);
          setProblem(null);
        } catch (error) {
          setProblem(error);
        }
      } while (reading.current.again);
    } finally {
      reading.current.busy = false;
    }
  };

  useEffect(() => {
    refresh();
  }, [id]);

  // the stream of its events, once the job is known (an unknown job asks nothing more)
  const known = job !== null;
  useEffect(() => {
    if (!known) return undefined;
    let frame = 0;
    const soon = () => {
      if (!frame) frame = requestAnimationFrame(() => ((frame = 0), redraw((n) => n + 1)));
    };
    const watch = watchJob(id, {
      baseUrl: new URL(config.api, location.href).href,
      after: feed.current.lastSeq,
      onEvent: (event) => {
        const f = feed.current;
        if (event.seq <= f.lastSeq) return;
        f.lastSeq = event.seq;
        f.total += 1;
        f.events.push(event);
        if (f.events.length > MAX_EVENTS + 100) f.events.splice(0, f.events.length - MAX_EVENTS);
        if (event.type === "log") {
          f.logs.push(event);
          if (f.logs.length > MAX_LOGS + 100) {
            f.droppedLogs += f.logs.length - MAX_LOGS;
            f.logs.splice(0, f.logs.length - MAX_LOGS);
          }
        } else if (event.type === "status") {
          f.statuses.push(event);
          if (f.statuses.length > MAX_STATUSES) f.statuses.splice(0, f.statuses.length - MAX_STATUSES);
        } else if (event.type === "progress") {
          const d = event.data ?? {};
          if (d.step && !(d.step in f.stepNames) && d.message && !d.current && (d.total === null || d.total === undefined)) {
            f.stepNames[d.step] = d.message;
          }
        }
        soon();
      },
      onJob: (state) => setLive(state),
      onEnd: () => {
        setEnded(true);
        refresh();
      },
      onConnection: (on) => {
        if (on) wasConnected.current = true;
        setConnected(on);
      },
      onError: (error) => {
        if (error.fatal) setProblem((before) => before ?? { stream: error });
      },
    });
    return () => {
      watch.close();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [id, known, run]);

  // the record follows the status (its worker, times, result…)
  const caughtUp = live && job && live.lastSeq >= (job.last_seq ?? 0);
  useEffect(() => {
    if (caughtUp && live.status && live.status !== job.status) refresh();
  }, [caughtUp, live?.status, live?.attempt]);

  if (problem && !problem.stream && !job) {
    const missing = problem?.status === 404;
    return html`<section class="job-page">
      <p><a href=${href("/")}>← Jobs</a></p>
      <div class="card job-missing">
        <h1>${missing ? "No such job" : "The job could not be read"}</h1>
        <p>${missing
          ? html`There is no job <code>${id}</code>: it was deleted or pruned, belongs to someone else, or never existed.`
          : messageOf(problem)}</p>
        ${missing ? null : html`<button type="button" onClick=${refresh}>Try again</button>`}
      </div>
    </section>`;
  }
  if (!job) return html`<p class="loading">Loading the job…</p>`;

  const state = caughtUp ? live : jobState(job);
  const status = state.status ?? job.status;
  const progress = state.progress;
  const finished = TERMINAL.has(status);
  const percent =
    progress?.percent !== null && progress?.percent !== undefined
      ? progress.percent
      : status === "succeeded"
        ? 100
        : status === "running"
          ? null
          : 0;
  const prompt = status === "waiting" ? (state.prompt ?? job.prompt) : null;
  const result = caughtUp ? state.result : job.result;
  const error = caughtUp ? state.error : job.error;
  const f = feed.current;
  const canCancel = Boolean(me.can?.cancel) && UNFINISHED.has(status);
  const canRetry = Boolean(me.can?.write) && (status === "failed" || status === "cancelled");
  const canDelete = Boolean(me.can?.write) && finished;
  const cancelAsked = state.cancelRequested || job.cancel_requested;
  const labels = Object.entries(job.labels ?? {});
  const step = stepLine(progress, f.stepNames);
  const streamProblem = problem?.stream;

  const retry = async () => {
    const done = await act(app, () => client.retry(id), "Queued again");
    if (done) {
      setJob(done);
      setEnded(false);
      setRun((n) => n + 1); // the watch ended with the job: follow it again from where it stopped
    }
  };

  return html`<section class="job-page" data-job-id=${job.id} data-status=${status}>
    <p class="job-back"><a href=${href("/")}>← Jobs</a></p>
    <header class="job-head">
      <div class="job-title">
        <h1><span class="job-task">${job.task}</span> <${Status} status=${status} />${cancelAsked && !finished
            ? html` <span class="jobs-flag">stopping</span>`
            : null}</h1>
        <code class="job-id">${job.id}</code>
      </div>
      <span class="grow"></span>
      <span class=${`live${connected ? " on" : ""}`} role="status">
        ${connected ? "live" : finished || ended ? "ended" : wasConnected.current ? "reconnecting" : "connecting"}
      </span>
      <div class="job-actions">
        ${canCancel
          ? html`<button type="button" class="danger" disabled=${cancelAsked}
              onClick=${() => act(app, () => client.cancel(id), "Cancel requested").then((j) => j && setJob(j))}>
              ${cancelAsked ? "Cancelling…" : "Cancel"}</button>`
          : null}
        ${canRetry ? html`<button type="button" class="primary" onClick=${retry}>Retry</button>` : null}
        ${canDelete
          ? html`<${ConfirmButton} label="Delete" danger=${true} confirm="Delete this job and its events?"
              onConfirm=${async () => {
                const done = await act(app, () => client.remove(id).then(() => true), `Deleted ${id}`);
                if (done) navigate(href("/"));
              }} />`
          : null}
      </div>
    </header>
    ${streamProblem ? html`<p class="alert" role="alert">Live updates stopped: ${messageOf(streamProblem)}</p>` : null}

    <section class="card job-progress" aria-labelledby="job-progress-title">
      <h2 id="job-progress-title" class="jobs-sr">Progress</h2>
      <div class="job-bar-line">
        <${Bar} percent=${percent} status=${status} label="progress" />
        <strong class="job-percent">${percent === null ? "–" : `${percent} %`}</strong>
      </div>
      <div class="job-progress-facts">
        ${progress?.total !== null && progress?.total !== undefined
          ? html`<span class="job-count">${formatNumber(progress.current)} / ${formatNumber(progress.total)}</span>`
          : progress?.current !== null && progress?.current !== undefined
            ? html`<span class="job-count">${formatNumber(progress.current)}</span>`
            : null}
        ${step ? html`<span class="job-step">${step}</span>` : null}
        ${progress?.rate ? html`<span class="job-rate" title="units per second">${formatNumber(progress.rate)}/s</span>` : null}
        ${progress?.eta_s !== null && progress?.eta_s !== undefined && !finished
          ? html`<span class="job-eta">ETA ${formatDuration(progress.eta_s)}</span>`
          : null}
      </div>
      ${progress?.message ? html`<p class="job-message">${progress.message}</p>` : null}
    </section>

    ${prompt
      ? html`<${Question} key=${prompt.key} prompt=${prompt} canAnswer=${Boolean(me.can?.answer)}
          onAnswer=${(/** @type {any} */ value, /** @type {string} */ key) =>
            act(app, () => client.answer(id, value, key), "Answered")} />`
      : null}

    ${status === "succeeded"
      ? html`<section class="card job-result" aria-labelledby="job-result-title">
          <h2 id="job-result-title">Result</h2>
          <${Json} value=${result} />
        </section>`
      : null}
    ${error
      ? html`<section class="card job-error" aria-labelledby="job-error-title">
          <h2 id="job-error-title">${status === "failed" ? "Error" : "Last error"}</h2>
          <p class="job-error-line"><strong>${error.type}</strong>: ${error.message}</p>
          ${error.traceback ? html`<pre class="trace">${error.traceback}</pre>` : null}
        </section>`
      : null}

    <div class="job-columns">
      <section class="card job-facts" aria-labelledby="job-facts-title">
        <h2 id="job-facts-title">Details</h2>
        <dl class="facts">
          <dt>Queue</dt><dd>${job.queue}</dd>
          <dt>Owner</dt><dd>${job.owner ?? html`<span class="muted">–</span>`}</dd>
          <dt>Priority</dt><dd>${job.priority}</dd>
          <dt>Attempt</dt><dd>${state.attempt ?? job.attempt} of ${job.max_attempts}</dd>
          ${job.crashes
            ? html`<dt>Lost its worker</dt><dd data-role="crashes">${job.crashes} of ${job.crash_retries} times allowed</dd>`
            : null}
          <dt>Worker</dt><dd>${job.worker_id ? html`<code>${job.worker_id}</code>` : html`<span class="muted">–</span>`}</dd>
          ${job.timeout ? html`<dt>Timeout</dt><dd>${formatDuration(job.timeout)}</dd>` : null}
          <dt>Created</dt><dd><${Ago} at=${job.created_at} /></dd>
          ${status === "queued" && job.run_at && Date.parse(job.run_at) > Date.now()
            ? html`<dt>Runs</dt><dd><${Ago} at=${job.run_at} /></dd>`
            : null}
          <dt>Started</dt><dd><${Ago} at=${job.started_at} /></dd>
          <dt>Finished</dt><dd><${Ago} at=${job.finished_at} /></dd>
          <dt>Labels</dt>
          <dd>${labels.length
            ? html`<ul class="job-labels">${labels.map(
                ([key, value]) => html`<li><a href=${href("/", { label: `${key}:${value}` })}>${key}: ${value}</a></li>`,
              )}</ul>`
            : html`<span class="muted">none</span>`}</dd>
          ${job.batch_id
            ? html`<dt>Batch</dt><dd><a href=${href(`/batches/${encodeURIComponent(job.batch_id)}`)}><code>${job.batch_id}</code></a></dd>`
            : null}
        </dl>
        <h3>Arguments</h3>
        <${Json} value=${job.args} />
      </section>
      <${Attempts} rows=${attemptsOf(f.statuses)} />
    </div>

    <${Logs} logs=${f.logs} dropped=${f.droppedLogs} level=${level} finished=${finished} />
    <${Timeline} events=${f.events.length > MAX_EVENTS ? f.events.slice(-MAX_EVENTS) : f.events} total=${f.total} />
  </section>`;
}
