/**
 * underway-elements.js: live progress of underway jobs and batches as custom elements, for
 * pages without a framework. Plain custom elements with a shadow root; no dependency but
 * ./underway.js, served beside this file (the server serves both under /assets/).
 *
 *   <script type="module" src="/assets/underway-elements.js"></script>
 *   <underway-job job-id="01m7…" token-url="/my/stream-token"></underway-job>
 *   <underway-batch batch-id="01m8…" token="uwt.…"></underway-batch>
 *
 * Attributes (both elements)
 *   job-id, batch-id  what to watch; changing it closes the watch and watches the new one
 *   base-url          where the API is mounted (default "/api")
 *   token             a literal stream token ("uwt.…", POST /stream-tokens) or key
 *   token-url         a same-origin URL the element POSTs to (cookies included, JSON body
 *                     {"job": id} or {"batch": id}, header X-Requested-With) whose answer is
 *                     {"token"}: for pages whose backend mints stream tokens. Asked once per
 *                     watch, and again when the token expires or is refused.
 *   transport         "sse" (default), "ws" or "poll"
 * Properties
 *   tokenProvider     async () => token: wins over both attributes
 *   state             (read only) the latest job state (jobState()) or batch view
 * Attributes the element sets on itself, for CSS such as underway-job[status="failed"]
 *   status            the job's status (queued, running, waiting, succeeded, failed, cancelled)
 *                     or the batch's (queued, running, paused, completed, partial, failed, cancelled)
 *   ended             present once the job or batch has ended
 *   connected         present while the live connection is open
 * Events (bubbling, composed: they cross shadow roots)
 *   underway-progress detail: the job state, or the batch view, on every change
 *   underway-end      detail: {status, job} or {status, batch}, once per watch
 *
 * Styling: ::part() names
 *   both        status, bar (the role=progressbar element, aria-valuenow 0..100), percent, eta, error
 *   job         fill, message, step, prompt, question, options, option (each answer button),
 *               answer-input and answer-send (a question without options), cancel
 *   batch       segment plus segment-succeeded, segment-failed, segment-cancelled,
 *               segment-running, segment-waiting, segment-queued; counts, count (one per
 *               status shown), plus count-<status>
 * Custom properties (on the element or any ancestor)
 *   --underway-bar-height (0.5rem), --underway-bar-radius (0.25rem),
 *   --underway-bar-background (#e5e7eb), --underway-bar-color (#2563eb),
 *   --underway-bar-transition (width 150ms linear; "none" to draw each value at once),
 *   --underway-succeeded-color, --underway-failed-color, --underway-cancelled-color,
 *   --underway-running-color, --underway-waiting-color, --underway-queued-color,
 *   --underway-muted-color (secondary text), --underway-gap (0.375rem), --underway-font (inherit)
 *
 * Safety: every string a job provides (messages, steps, questions, options, results, errors)
 * is set as text (textContent), never parsed as HTML. Styles come from constructed stylesheets
 * (adoptedStyleSheets) and the CSSOM, so a Content-Security-Policy without 'unsafe-inline'
 * (style-src 'self') holds, and the module needs no inline script (script-src 'self').
 */

import { createClient, watchBatch, watchJob } from "./underway.js";

const ENDED_JOB = new Set(["succeeded", "failed", "cancelled"]);
const ENDED_BATCH = new Set(["completed", "partial", "failed", "cancelled"]);
/** Segments of a batch's bar, left to right. */
const SEGMENTS = ["succeeded", "failed", "cancelled", "running", "waiting", "queued"];

const COMMON_CSS = `
:host {
  display: block;
  font: var(--underway-font, inherit);
  --_gap: var(--underway-gap, 0.375rem);
  --_muted: var(--underway-muted-color, #6b7280);
}
:host([hidden]), [hidden] { display: none !important; }
.head, .foot { display: flex; flex-wrap: wrap; align-items: baseline; gap: var(--_gap); }
.head { margin-block-end: var(--_gap); }
.foot { margin-block-start: var(--_gap); color: var(--_muted); font-size: 0.875em; }
.status { font-weight: 600; text-transform: capitalize; }
.grow { flex: 1 1 auto; min-width: 0; overflow-wrap: anywhere; }
.bar {
  display: flex;
  overflow: hidden;
  height: var(--underway-bar-height, 0.5rem);
  border-radius: var(--underway-bar-radius, 0.25rem);
  background: var(--underway-bar-background, #e5e7eb);
}
.error { color: var(--underway-failed-color, #dc2626); overflow-wrap: anywhere; }
button { font: inherit; cursor: pointer; }
button:disabled { cursor: default; opacity: 0.6; }
`;

const JOB_CSS = `
.fill {
  width: 0;
  background: var(--underway-bar-color, #2563eb);
  transition: var(--underway-bar-transition, width 150ms linear);
}
.bar.indeterminate .fill { width: 100%; opacity: 0.35; }
:host([status="succeeded"]) .fill { background: var(--underway-succeeded-color, #16a34a); }
:host([status="failed"]) .fill { background: var(--underway-failed-color, #dc2626); }
:host([status="cancelled"]) .fill { background: var(--underway-cancelled-color, #9ca3af); }
:host([status="waiting"]) .fill { background: var(--underway-waiting-color, #d97706); }
.prompt { margin-block-start: var(--_gap); }
.options { display: flex; flex-wrap: wrap; gap: var(--_gap); margin-block-start: var(--_gap); }
`;

const BATCH_CSS = `
.segment { width: 0; transition: var(--underway-bar-transition, width 150ms linear); }
.segment.succeeded { background: var(--underway-succeeded-color, #16a34a); }
.segment.failed { background: var(--underway-failed-color, #dc2626); }
.segment.cancelled { background: var(--underway-cancelled-color, #9ca3af); }
.segment.running { background: var(--underway-running-color, var(--underway-bar-color, #2563eb)); }
.segment.waiting { background: var(--underway-waiting-color, #d97706); }
.segment.queued { background: var(--underway-queued-color, transparent); }
.counts { display: flex; flex-wrap: wrap; gap: var(--_gap); }
`;

let sheets = null;

/** The shared constructed stylesheets, made on first use (a page may load this in Node tests). */
function stylesheets() {
  if (sheets === null) {
    const make = (css) => {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(css);
      return sheet;
    };
    const common = make(COMMON_CSS);
    sheets = { job: [common, make(JOB_CSS)], batch: [common, make(BATCH_CSS)] };
  }
  return sheets;
}

/** A new element of the shadow tree: ``part`` names its ::part(), ``className`` its class. */
function node(tag, part, className = part) {
  const element = document.createElement(tag);
  if (part) element.setAttribute("part", part);
  if (className) element.className = className;
  return element;
}

/** "42 s", "3 min 5 s", "2 h 10 min". */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return s % 60 ? `${minutes} min ${s % 60} s` : `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function formatPercent(percent) {
  return `${Math.round(percent * 10) / 10} %`;
}

/** An error as text: a job's {type, message}, or an Error's message. */
function errorText(error) {
  if (error && typeof error === "object" && !(error instanceof Error) && error.type) {
    return `${error.type}: ${error.message ?? ""}`;
  }
  return error?.message ? String(error.message) : String(error);
}

/** An option or answer as text (options may be any JSON value). */
function asText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/**
 * A token function over a same-origin URL that answers {token}: POSTed to (cookies included) each
 * time underway.js asks, which it does once per watch and again when the token expires or is
 * refused (it shares one pending call between the streams of the page).
 */
export function tokenFromUrl(url, body) {
  return async () => {
    const target = new URL(url, document.baseURI);
    if (target.origin !== location.origin) {
      throw new Error(`token-url must be on this page's origin (${location.origin}), not ${target.origin}`);
    }
    const response = await fetch(target, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Requested-With": "underway-elements" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`token-url answered ${response.status} ${response.statusText}`.trim());
    const answer = await response.json();
    if (!answer || typeof answer.token !== "string") throw new Error("token-url answered no {token}");
    return answer.token;
  };
}

/**
 * What both elements share: attributes to options, the token, one watch at a time (closed on
 * disconnect and restarted, once per task, when an observed attribute changes), the events.
 */
class UnderwayElement extends HTMLElement {
  static observedAttributes = ["base-url", "token", "token-url", "transport"];

  #tokenProvider = null;
  #token = undefined;
  #watch = null;
  #generation = 0;
  #restartQueued = false;
  #endSent = false;
  state = null;

  get tokenProvider() {
    return this.#tokenProvider;
  }

  set tokenProvider(provider) {
    this.#tokenProvider = typeof provider === "function" ? provider : null;
    this.restart();
  }

  connectedCallback() {
    this.restart();
  }

  disconnectedCallback() {
    this.stop();
  }

  attributeChangedCallback(_name, before, after) {
    if (before !== after) this.restart();
  }

  /** Watch again (the id or the options changed); several changes in one task restart once. */
  restart() {
    if (this.#restartQueued || !this.isConnected) return;
    this.#restartQueued = true;
    queueMicrotask(() => {
      this.#restartQueued = false;
      if (!this.isConnected) return;
      this.stop();
      this.start();
    });
  }

  /** Close the watch; callbacks of a closed watch are ignored from now on. */
  stop() {
    this.#generation += 1;
    const watch = this.#watch;
    this.#watch = null;
    if (watch) watch.close();
    this.toggleAttribute("connected", false);
  }

  /** Open the watch for the current id, if any (subclasses: ``open(id, options, live)``). */
  start() {
    this.#endSent = false;
    this.state = null;
    this.removeAttribute("status");
    this.toggleAttribute("ended", false);
    const id = this.getAttribute(this.constructor.idAttribute);
    this.reset();
    if (!id) return;
    const generation = this.#generation;
    const live = (fn) => (...args) => {
      if (generation === this.#generation) fn(...args);
    };
    this.#token = this.#makeToken(id);
    const options = {
      baseUrl: this.getAttribute("base-url") || "/api",
      token: this.#token,
      transport: this.getAttribute("transport") || undefined,
      onConnection: live((connected) => this.toggleAttribute("connected", Boolean(connected))),
      onError: live((error) => this.showError(error)),
    };
    try {
      this.#watch = this.open(id, options, live);
    } catch (error) {
      this.showError(error);
    }
  }

  #makeToken(id) {
    if (this.#tokenProvider) {
      const provider = this.#tokenProvider;
      return () => provider();
    }
    const url = this.getAttribute("token-url");
    if (url) return tokenFromUrl(url, { [this.constructor.kind]: id });
    return this.getAttribute("token") || undefined;
  }

  /** Dispatch ``underway-progress``. */
  progressed(detail) {
    this.dispatchEvent(new CustomEvent("underway-progress", { detail, bubbles: true, composed: true }));
  }

  /** Dispatch ``underway-end`` once per watch. */
  ended(detail) {
    this.toggleAttribute("ended", true);
    if (this.#endSent) return;
    this.#endSent = true;
    this.dispatchEvent(new CustomEvent("underway-end", { detail, bubbles: true, composed: true }));
  }

  /** A client for REST calls (cancel, answer) with the same base URL and token as the watch. */
  client() {
    return createClient({ baseUrl: this.getAttribute("base-url") || "/api", token: this.#token });
  }
}

/** <underway-job job-id="…">: one job's progress, message, ETA, question and cancel button. */
export class UnderwayJobElement extends UnderwayElement {
  static idAttribute = "job-id";
  static kind = "job";
  static observedAttributes = ["job-id", ...UnderwayElement.observedAttributes];

  #parts;
  #promptShown = null;
  #busy = false;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.adoptedStyleSheets = stylesheets().job;
    const p = {
      head: node("div", null, "head"),
      status: node("span", "status"),
      step: node("span", "step"),
      percent: node("span", "percent"),
      bar: node("div", "bar"),
      fill: node("div", "fill"),
      foot: node("div", null, "foot"),
      message: node("span", "message", "message grow"),
      eta: node("span", "eta"),
      prompt: node("div", "prompt"),
      question: node("div", "question"),
      options: node("div", "options"),
      cancel: node("button", "cancel"),
      error: node("div", "error"),
    };
    p.bar.setAttribute("role", "progressbar");
    p.bar.setAttribute("aria-valuemin", "0");
    p.bar.setAttribute("aria-valuemax", "100");
    p.bar.setAttribute("aria-label", "Job progress");
    p.bar.append(p.fill);
    p.head.append(p.status, p.step, node("span", null, "grow"), p.percent);
    p.foot.append(p.message, p.eta);
    p.prompt.append(p.question, p.options);
    p.cancel.type = "button";
    p.cancel.textContent = "Cancel";
    p.cancel.addEventListener("click", () => this.cancel());
    root.append(p.head, p.bar, p.foot, p.prompt, p.error, p.cancel);
    this.#parts = p;
    this.reset();
  }

  open(id, options, live) {
    return watchJob(id, {
      ...options,
      onJob: live((state) => this.#render(state)),
      onEnd: live((info) => this.#end(info)),
    });
  }

  /** Ask the job to stop (the button does this). */
  async cancel() {
    const id = this.getAttribute("job-id");
    if (!id || this.#busy) return;
    await this.#call(() => this.client().cancel(id));
  }

  /** Answer the job's question (the option buttons do this). */
  async answer(value, key = this.state?.prompt?.key) {
    const id = this.getAttribute("job-id");
    if (!id || this.#busy) return;
    await this.#call(() => this.client().answer(id, value, key));
  }

  async #call(request) {
    this.#setBusy(true);
    try {
      await request();
    } catch (error) {
      this.showError(error);
    } finally {
      this.#setBusy(false);
    }
  }

  #setBusy(busy) {
    this.#busy = busy;
    const p = this.#parts;
    p.cancel.disabled = busy;
    for (const control of p.options.querySelectorAll("button, input")) control.disabled = busy;
  }

  reset() {
    const p = this.#parts;
    if (!p) return;
    this.#promptShown = null;
    this.#setPercent(null);
    p.status.textContent = "";
    p.step.textContent = "";
    p.message.textContent = "";
    p.eta.textContent = "";
    p.error.textContent = "";
    p.error.hidden = true;
    p.prompt.hidden = true;
    p.options.replaceChildren();
    p.cancel.hidden = true;
  }

  showError(error) {
    const p = this.#parts;
    p.error.textContent = errorText(error);
    p.error.hidden = false;
  }

  #render(state) {
    if (!state) return;
    this.state = state;
    const p = this.#parts;
    const status = String(state.status ?? "");
    const ended = isOver(state, status);
    const progress = state.progress ?? null;
    this.setAttribute("status", status);
    p.status.textContent = this.#statusText(state, status);
    let percent = progress && typeof progress.percent === "number" ? progress.percent : null;
    if (status === "succeeded") percent = 100;
    this.#setPercent(percent);
    p.step.textContent = progress?.step ? `Step ${progress.step}${progress.steps ? ` of ${progress.steps}` : ""}` : "";
    p.message.textContent = asText(state.message ?? progress?.message ?? "");
    const eta = !ended && progress && typeof progress.eta_s === "number" ? progress.eta_s : null;
    p.eta.textContent = eta === null ? "" : `${formatDuration(eta)} left`;
    p.cancel.hidden = ended;
    this.#renderPrompt(status === "waiting" && !ended ? state.prompt : null);
    if (status === "failed" && state.error) this.showError(state.error);
    else if (!ended) p.error.hidden = true;
    this.progressed(state);
    if (ended) this.#end({ status });
  }

  #statusText(state, status) {
    if (!isOver(state, status) && state.cancelRequested) return "cancelling";
    if (status === "waiting") return "waiting for an answer";
    return status;
  }

  #setPercent(percent) {
    const { bar, fill, percent: label } = this.#parts;
    const known = typeof percent === "number" && Number.isFinite(percent);
    bar.classList.toggle("indeterminate", !known);
    if (known) {
      const clamped = Math.min(100, Math.max(0, percent));
      bar.setAttribute("aria-valuenow", String(clamped));
      fill.style.width = `${clamped}%`; // CSSOM, which a CSP without 'unsafe-inline' allows
      label.textContent = formatPercent(clamped);
    } else {
      bar.removeAttribute("aria-valuenow");
      fill.style.width = "";
      label.textContent = "";
    }
  }

  /** The question and its options, rebuilt only when the question changes (clicks go on). */
  #renderPrompt(prompt) {
    const p = this.#parts;
    const shown = prompt ? JSON.stringify([prompt.key, prompt.message, prompt.options]) : null;
    p.prompt.hidden = prompt === null || prompt === undefined;
    if (shown === this.#promptShown) return;
    this.#promptShown = shown;
    p.question.textContent = prompt ? asText(prompt.message ?? "") : "";
    p.options.replaceChildren(...(prompt ? this.#answerControls(prompt) : []));
  }

  #answerControls(prompt) {
    if (Array.isArray(prompt.options) && prompt.options.length) {
      return prompt.options.map((option) => {
        const button = node("button", "option", "option");
        button.type = "button";
        button.textContent = asText(option);
        button.addEventListener("click", () => this.answer(option, prompt.key));
        return button;
      });
    }
    const input = node("input", "answer-input", "answer-input");
    input.type = "text";
    input.setAttribute("aria-label", "Answer");
    const send = node("button", "answer-send", "answer-send");
    send.type = "button";
    send.textContent = "Send";
    const submit = () => this.answer(input.value, prompt.key);
    send.addEventListener("click", submit);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") submit();
    });
    return [input, send];
  }

  #end(info) {
    const status = String(info?.status ?? this.state?.status ?? "");
    if (status) this.setAttribute("status", status);
    this.#parts.cancel.hidden = true;
    this.#parts.eta.textContent = "";
    this.#renderPrompt(null);
    this.ended({ status, job: this.state });
  }
}

function isOver(state, status) {
  return Boolean(state.ended) || ENDED_JOB.has(status);
}

/** <underway-batch batch-id="…">: a bar in one segment per status, counts, percent and ETA. */
export class UnderwayBatchElement extends UnderwayElement {
  static idAttribute = "batch-id";
  static kind = "batch";
  static observedAttributes = ["batch-id", ...UnderwayElement.observedAttributes];

  #parts;

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.adoptedStyleSheets = stylesheets().batch;
    const p = {
      head: node("div", null, "head"),
      status: node("span", "status"),
      percent: node("span", "percent"),
      bar: node("div", "bar"),
      segments: {},
      foot: node("div", null, "foot"),
      counts: node("span", "counts", "counts grow"),
      eta: node("span", "eta"),
      error: node("div", "error"),
    };
    p.bar.setAttribute("role", "progressbar");
    p.bar.setAttribute("aria-valuemin", "0");
    p.bar.setAttribute("aria-valuemax", "100");
    p.bar.setAttribute("aria-label", "Batch progress");
    for (const status of SEGMENTS) {
      const segment = node("div", `segment segment-${status}`, `segment ${status}`);
      p.segments[status] = segment;
      p.bar.append(segment);
    }
    p.head.append(p.status, node("span", null, "grow"), p.percent);
    p.foot.append(p.counts, p.eta);
    root.append(p.head, p.bar, p.foot, p.error);
    this.#parts = p;
    this.reset();
  }

  open(id, options, live) {
    return watchBatch(id, {
      ...options,
      onBatch: live((view) => this.#render(view)),
      onEnd: live((view) => this.#end(view)),
    });
  }

  reset() {
    const p = this.#parts;
    if (!p) return;
    p.bar.removeAttribute("aria-valuenow");
    for (const segment of Object.values(p.segments)) segment.style.width = "";
    p.status.textContent = "";
    p.percent.textContent = "";
    p.counts.replaceChildren();
    p.eta.textContent = "";
    p.error.textContent = "";
    p.error.hidden = true;
  }

  showError(error) {
    const p = this.#parts;
    p.error.textContent = errorText(error);
    p.error.hidden = false;
  }

  #render(view) {
    if (!view || typeof view !== "object") return;
    this.state = view;
    const p = this.#parts;
    const status = String(view.status ?? "");
    const finished = ENDED_BATCH.has(status);
    const counts = view.counts ?? {};
    const total = Number(view.total) || 0;
    this.setAttribute("status", status);
    p.status.textContent = status;
    const percent = typeof view.percent === "number" ? Math.min(100, Math.max(0, view.percent)) : 0;
    p.bar.setAttribute("aria-valuenow", String(percent));
    p.percent.textContent = formatPercent(percent);
    for (const name of SEGMENTS) {
      const share = total > 0 ? (100 * (Number(counts[name]) || 0)) / total : 0;
      p.segments[name].style.width = `${share}%`;
    }
    p.counts.replaceChildren(...this.#countNodes(counts));
    const eta = !finished && typeof view.eta_s === "number" ? view.eta_s : null;
    p.eta.textContent = eta === null ? "" : `${formatDuration(eta)} left`;
    p.error.hidden = true;
    this.progressed(view);
    if (finished) this.#end(view);
  }

  #countNodes(counts) {
    const names = [...SEGMENTS, ...Object.keys(counts).filter((name) => !SEGMENTS.includes(name))];
    return names
      .filter((name) => Number(counts[name]) > 0)
      .map((name) => {
        const count = node("span", `count count-${name}`, `count ${name}`);
        count.textContent = `${Number(counts[name])} ${name}`;
        return count;
      });
  }

  #end(view) {
    if (view && typeof view === "object" && view.counts && view !== this.state) this.#render(view);
    this.ended({ status: String(this.state?.status ?? view?.status ?? ""), batch: this.state ?? view });
  }
}

if (!customElements.get("underway-job")) customElements.define("underway-job", UnderwayJobElement);
if (!customElements.get("underway-batch")) customElements.define("underway-batch", UnderwayBatchElement);
