// The batches: their list (refreshed every 5 s while the page is visible, no stream per batch)
// and one batch's page (one `watchBatch` stream for its counts and changed items, its items paged
// 50 at a time from the API: a batch of 10,000 items never loads them all).

import { watchBatch } from "./underway.js";
import {
  act,
  Ago,
  ConfirmButton,
  config,
  ErrorNote,
  formatDuration,
  formatNumber,
  href,
  html,
  Pager,
  Status,
  useApp,
  useCallback,
  useEffect,
  useEvery,
  useLoad,
  useLocation,
  useMemo,
  useRef,
  useState,
} from "./lib.js";

/** The items' statuses in the bar's order, with their labels. */
export const ITEM_STATUSES = /** @type {const} */ ([
  ["succeeded", "succeeded"],
  ["failed", "failed"],
  ["cancelled", "cancelled"],
  ["running", "running"],
  ["waiting", "waiting"],
  ["queued", "queued"],
]);
const ENDED = new Set(["succeeded", "failed", "cancelled"]);
const BATCH_ENDED = new Set(["completed", "partial", "failed", "cancelled"]);
const PAGE_SIZE = 50;

/** @param {any} batch */
function totalOf(batch) {
  const counts = batch?.counts ?? {};
  const summed = Object.values(counts).reduce((sum, n) => sum + (Number(n) || 0), 0);
  return batch?.total || summed;
}

/** The percent of a batch's items that ended. @param {any} batch */
export function percentEnded(batch) {
  if (typeof batch?.percent === "number") return batch.percent;
  const total = totalOf(batch);
  if (!total) return 0;
  const counts = batch.counts ?? {};
  return (100 * ((counts.succeeded ?? 0) + (counts.failed ?? 0) + (counts.cancelled ?? 0))) / total;
}

/** "83 %", "99.5 %". @param {number} percent */
const formatPercent = (percent) => `${Number.isInteger(percent) ? percent : percent.toFixed(1)} %`;

/**
 * A batch's items as a bar of coloured segments, one per status, as wide as its count; a
 * progressbar whose value is the percent of items that ended.
 * @param {{batch: any, large?: boolean}} props
 */
export function CountsBar({ batch, large }) {
  const counts = batch?.counts ?? {};
  const percent = percentEnded(batch);
  const total = totalOf(batch);
  const parts = ITEM_STATUSES.filter(([status]) => (counts[status] ?? 0) > 0);
  const text = parts.map(([status, label]) => `${formatNumber(counts[status])} ${label}`).join(", ");
  return html`<div
    class=${`counts-bar${large ? " large" : ""}`}
    role="progressbar"
    aria-label=${`${batch?.name || "batch"}: items ended`}
    aria-valuemin="0"
    aria-valuemax="100"
    aria-valuenow=${Math.round(percent)}
    aria-valuetext=${`${formatPercent(Math.round(percent * 10) / 10)} ended${text ? ` (${text})` : ""}`}
    title=${text || `${formatNumber(total)} items`}
  >
    ${parts.map(
      ([status]) => html`<span key=${status} class=${`seg seg-${status}`} style=${{ flexGrow: counts[status] }}></span>`,
    )}
  </div>`;
}

/** The counts as small coloured dots with numbers. @param {{counts: Record<string, number>, all?: boolean}} props */
function CountList({ counts, all }) {
  const shown = ITEM_STATUSES.filter(([status]) => all || (counts?.[status] ?? 0) > 0);
  if (shown.length === 0) return html`<span class="muted">no items</span>`;
  return html`<ul class="count-list">
    ${shown.map(
      ([status, label]) => html`<li key=${status} class=${`count count-${status}`} data-status=${status}>
        <span class="dot" aria-hidden="true"></span><span class="n">${formatNumber(counts?.[status] ?? 0)}</span>
        <span class="label">${label}</span>
      </li>`,
    )}
  </ul>`;
}

/** A batch's status, and "paused" beside it when it is. @param {{batch: any}} props */
function BatchStatus({ batch }) {
  return html`<span class="statuses">
    <${Status} status=${batch.status} />
    ${batch.paused && batch.status !== "paused" && !BATCH_ENDED.has(batch.status) ? html` <${Status} status="paused" />` : null}
  </span>`;
}

/**
 * Cursor paging: the cursors of the pages seen so far (null: the first page).
 * @returns {{cursor: string|null, newer: boolean, toNewer: () => void, toOlder: (next: string) => void}}
 */
function useCursors() {
  const [stack, setStack] = useState(/** @type {(string|null)[]} */ ([null]));
  return {
    cursor: stack[stack.length - 1],
    newer: stack.length > 1,
    toNewer: () => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)),
    toOlder: (next) => setStack((s) => [...s, next]),
  };
}

// -- the list ---------------------------------------------------------------------------------

export function BatchesPage() {
  const { client } = useApp();
  const pages = useCursors();
  const { data, error, reload } = useLoad(
    () => client.listBatches({ limit: PAGE_SIZE, cursor: pages.cursor ?? undefined }),
    [client, pages.cursor],
  );
  useEvery(reload, 5000);
  const batches = data?.batches ?? [];
  return html`<section class="page-batches">
    <div class="page-head">
      <h1>Batches</h1>
      <span class="muted">${data ? `${formatNumber(batches.length)} shown · refreshed every 5 s` : ""}</span>
    </div>
    <${ErrorNote} error=${error} />
    ${data === null && !error
      ? html`<p class="loading">Loading…</p>`
      : batches.length === 0 && !error
        ? html`<div class="card empty">
            <p>No batches yet.</p>
            <p class="muted">Submit one with <code>POST /api/batches</code>, <code>app.submit_batch()</code> or
              <code>underway batch</code>.</p>
          </div>`
        : batches.length > 0
          ? html`<div class="table-wrap">
              <table class="grid batches">
                <thead>
                  <tr>
                    <th scope="col">Batch</th>
                    <th scope="col" class="hide-narrow">Task</th>
                    <th scope="col">Status</th>
                    <th scope="col" class="col-progress">Progress</th>
                    <th scope="col" class="hide-narrow">Items</th>
                    <th scope="col" class="hide-narrow">Created</th>
                  </tr>
                </thead>
                <tbody>
                  ${batches.map(
                    (batch) => html`<tr key=${batch.id} data-batch=${batch.id}>
                      <td class="name">
                        <a href=${href(`/batches/${encodeURIComponent(batch.id)}`)}>${batch.name || batch.id}</a>
                        ${batch.name ? html`<div class="muted mono small">${batch.id}</div>` : null}
                      </td>
                      <td class="hide-narrow mono">${batch.task}</td>
                      <td><${BatchStatus} batch=${batch} /></td>
                      <td class="col-progress">
                        <${CountsBar} batch=${batch} />
                        <div class="small muted">${progressLine(batch)}</div>
                      </td>
                      <td class="hide-narrow"><${CountList} counts=${batch.counts} /></td>
                      <td class="hide-narrow"><${Ago} at=${batch.created_at} /></td>
                    </tr>`,
                  )}
                </tbody>
              </table>
            </div>`
          : null}
    <${Pager}
      label="batch pages"
      newer=${pages.newer}
      older=${Boolean(data?.next_cursor)}
      onNewer=${pages.toNewer}
      onOlder=${() => data?.next_cursor && pages.toOlder(data.next_cursor)}
    />
  </section>`;
}

// -- one batch --------------------------------------------------------------------------------

/**
 * The batch, live: `{batch, connected, ended, error, patches, restart, setBatch}`. `patches` are
 * the changed items by id (`{id, status?, progress?, at}`), `restart` opens the stream again
 * (after a retry or a resume, a batch that had ended goes on).
 * @param {string} id
 */
function useBatchWatch(id) {
  const [batch, setBatch] = useState(/** @type {any} */ (null));
  const [connected, setConnected] = useState(false);
  const [ended, setEnded] = useState(false);
  const [error, setError] = useState(/** @type {any} */ (null));
  const [patches, setPatches] = useState(/** @type {Record<string, any>} */ ({}));
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    setEnded(false);
    const watch = watchBatch(id, {
      baseUrl: new URL(config.api, location.href).href,
      onBatch: (view, changed) => {
        setBatch(view);
        setError(null);
        if (changed.length) {
          const at = Date.now();
          setPatches((before) => {
            const next = { ...before };
            for (const item of changed) next[item.id] = { ...next[item.id], ...item, at };
            return next;
          });
        }
      },
      onEnd: (view) => {
        if (view) setBatch(view);
        setEnded(true);
      },
      onConnection: setConnected,
      onError: (failure) => {
        if (failure.fatal || failure.status === 404) setError(failure);
      },
    });
    return () => watch.close();
  }, [id, generation]);
  const restart = useCallback(() => setGeneration((n) => n + 1), []);
  return { batch, setBatch, connected, ended, error, patches, restart };
}

/** @param {{id: string}} props */
export function BatchPage({ id }) {
  const app = useApp();
  const { client, me } = app;
  const live = useBatchWatch(id);
  const { batch } = live;
  const { query } = useLocation();
  const status = query.get("status") ?? "";

  if (live.error && !batch) {
    return html`<section>
      <p><a href=${href("/batches")}>← Batches</a></p>
      <h1>Batch <span class="mono">${id}</span></h1>
      <${ErrorNote} error=${live.error} />
    </section>`;
  }
  if (!batch) return html`<p class="loading">Loading the batch…</p>`;

  const counts = batch.counts ?? {};
  const total = totalOf(batch);
  const done = (counts.succeeded ?? 0) + (counts.failed ?? 0) + (counts.cancelled ?? 0);
  const percent = percentEnded(batch);
  const over = BATCH_ENDED.has(batch.status);
  const retryable = (counts.failed ?? 0) + (counts.cancelled ?? 0);
  const can = me.can ?? {};

  /** @param {Promise<any>} change */
  const after = async (change) => {
    const result = await change;
    if (result) {
      live.setBatch(result.batch ?? result);
      live.restart();
    }
  };
  const retry = () =>
    after(act(app, () => client.retryFailed(id), (r) => `${formatNumber(r.retried)} items queued again`));
  const cancel = () => after(act(app, () => client.cancelBatch(id), "Batch cancelled"));
  const pause = () => after(act(app, () => client.pauseBatch(id), "Batch paused: no more items start"));
  const resume = () => after(act(app, () => client.resumeBatch(id), "Batch resumed"));
  const results = (format) => `${config.api}/batches/${encodeURIComponent(id)}/results?format=${format}`;

  return html`<section class="page-batch">
    <p class="crumbs"><a href=${href("/batches")}>← Batches</a></p>
    <div class="page-head">
      <h1>
        <span class="title">${batch.name || "Batch"}</span>
        <span class="mono muted small">${batch.id}</span>
      </h1>
      <${BatchStatus} batch=${batch} />
      <span class=${`live${live.connected ? " on" : ""}`}>${over ? "ended" : live.connected ? "live" : "connecting…"}</span>
    </div>

    <div class="card batch-summary">
      <div class="batch-progress">
        <${CountsBar} batch=${batch} large=${true} />
        <div class="progress-facts">
          <span class="big" data-role="percent">${formatPercent(Math.round(percent * 10) / 10)}</span>
          <span class="muted"><span data-role="done">${formatNumber(done)}</span> of ${formatNumber(total)} items ended</span>
          <span class="muted" data-role="rate">${batch.rate ? `${formatRate(batch.rate)}` : ""}</span>
          <span class="muted" data-role="eta">${!over && batch.eta_s != null ? `ETA ${formatDuration(batch.eta_s)}` : ""}</span>
        </div>
      </div>
      <nav class="status-filters" aria-label="items by status">
        <a href=${href(`/batches/${encodeURIComponent(id)}`)} class=${`chip${status === "" ? " active" : ""}`}
          aria-current=${status === "" ? "true" : undefined}>
          <span class="n">${formatNumber(total)}</span> all
        </a>
        ${ITEM_STATUSES.map(
          ([name, label]) => html`<a key=${name}
            href=${href(`/batches/${encodeURIComponent(id)}`, { status: name })}
            class=${`chip count count-${name}${status === name ? " active" : ""}`}
            data-status=${name}
            aria-current=${status === name ? "true" : undefined}>
            <span class="dot" aria-hidden="true"></span><span class="n">${formatNumber(counts[name] ?? 0)}</span> ${label}
          </a>`,
        )}
      </nav>
      <dl class="facts batch-facts">
        <dt>Task</dt><dd class="mono">${batch.task}</dd>
        <dt>Queue</dt><dd class="mono">${batch.queue}</dd>
        ${batch.owner ? html`<dt>Owner</dt><dd>${batch.owner}</dd>` : null}
        <dt>Created</dt><dd><${Ago} at=${batch.created_at} /></dd>
        ${batch.started_at ? html`<dt>Started</dt><dd><${Ago} at=${batch.started_at} /></dd>` : null}
        ${batch.finished_at ? html`<dt>Finished</dt><dd><${Ago} at=${batch.finished_at} /></dd>` : null}
        ${Object.keys(batch.labels ?? {}).length
          ? html`<dt>Labels</dt><dd>${Object.entries(batch.labels).map(
              ([k, v]) => html`<span key=${k} class="label-chip">${k}=${v}</span> `,
            )}</dd>`
          : null}
      </dl>
      <div class="toolbar batch-actions">
        ${can.write !== false
          ? html`<button type="button" onClick=${retry} disabled=${retryable === 0}
              title="Run the failed and cancelled items again">Retry failed${retryable ? ` (${formatNumber(retryable)})` : ""}</button>
            ${batch.paused
              ? html`<button type="button" onClick=${resume} disabled=${over}>Resume</button>`
              : html`<button type="button" onClick=${pause} disabled=${over}>Pause</button>`}`
          : null}
        ${can.cancel !== false
          ? html`<${ConfirmButton} label="Cancel batch" confirm="Cancel every unfinished item?" danger=${true}
              disabled=${over} onConfirm=${cancel} />`
          : null}
        <span class="grow"></span>
        <span class="exports">
          <span class="muted">Export results:</span>
          <a class="button" href=${results("csv")} download="">CSV</a>
          <a class="button" href=${results("json")} download="">JSON</a>
          <a class="button" href=${results("ndjson")} download="">NDJSON</a>
        </span>
      </div>
    </div>

    <${BatchItems} key=${status} id=${id} status=${status} batch=${batch} patches=${live.patches} />
  </section>`;
}

/** "3 / 5 ended · 60 %" @param {any} batch */
function progressLine(batch) {
  const counts = batch.counts ?? {};
  const done = (counts.succeeded ?? 0) + (counts.failed ?? 0) + (counts.cancelled ?? 0);
  return `${formatNumber(done)} / ${formatNumber(totalOf(batch))} ended · ${formatPercent(Math.round(percentEnded(batch)))}`;
}

/** "2.5 items/s", "12 items/min". @param {number} rate items per second */
function formatRate(rate) {
  if (rate >= 1) return `${rate.toFixed(rate >= 10 ? 0 : 1)} items/s`;
  if (rate * 60 >= 1) return `${(rate * 60).toFixed(rate * 60 >= 10 ? 0 : 1)} items/min`;
  return `${(rate * 3600).toFixed(1)} items/h`;
}

/** A short text of a JSON value, for a table cell. @param {any} value @param {number} [most] */
function brief(value, most = 80) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}

/** The error of a job as one line. @param {any} error */
function errorLine(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  const type = error.type ?? error.exc_type ?? "";
  const message = error.message ?? "";
  return type && message ? `${type}: ${message}` : type || message || JSON.stringify(error);
}

/**
 * One page of a batch's items (50), from the API; their status and progress updated from the
 * stream's changed items, and the page read again (at most once a second) when an item shown
 * ends, or, under a status filter, when an item enters that status.
 * @param {{id: string, status: string, batch: any, patches: Record<string, any>}} props
 */
function BatchItems({ id, status, batch, patches }) {
  const { client } = useApp();
  const pages = useCursors();
  const loadedAt = useRef(0);
  const { data, error, reload } = useLoad(() => {
    loadedAt.current = Date.now();
    return client.batchItems(id, { status: status || undefined, limit: PAGE_SIZE, cursor: pages.cursor ?? undefined });
  }, [client, id, status, pages.cursor]);

  const jobs = data?.jobs ?? [];
  const shown = useMemo(() => new Set(jobs.map((job) => job.id)), [jobs]);
  const timer = useRef(/** @type {ReturnType<typeof setTimeout>|null} */ (null));
  useEffect(() => {
    if (timer.current !== null || data === null) return;
    // a change newer than the page read: an item shown that ended (its result, its error), or,
    // under a status filter on the first page, an item that entered the status
    let stale = false;
    for (const [itemId, patch] of Object.entries(patches)) {
      if (patch.at <= loadedAt.current || !patch.status) continue;
      const row = shown.has(itemId) ? jobs.find((job) => job.id === itemId) : null;
      if (row && ENDED.has(patch.status) && row.status !== patch.status) stale = true;
      else if (!row && status && patch.status === status && pages.cursor === null) stale = true;
      if (stale) break;
    }
    if (stale) {
      timer.current = setTimeout(() => {
        timer.current = null;
        reload();
      }, 300);
    }
  }, [patches, data, shown, status, pages.cursor, reload]);
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);
  // the batch ended: the items read once more (a stream event names at most 100 changed items)
  const lastStatus = useRef(batch?.status);
  useEffect(() => {
    if (lastStatus.current !== batch?.status && BATCH_ENDED.has(batch?.status)) reload();
    lastStatus.current = batch?.status;
  }, [batch?.status, reload]);

  const running = useMemo(() => {
    /** @type {Record<string, any>} */
    const found = {};
    for (const item of batch?.running ?? []) found[item.id] = item.progress;
    return found;
  }, [batch]);

  /** @param {any} job */
  const current = (job) => {
    const patch = patches[job.id];
    const fresh = patch && patch.at > loadedAt.current ? patch : null;
    return {
      ...job,
      status: fresh?.status ?? job.status,
      progress: fresh?.progress ?? running[job.id] ?? job.progress,
    };
  };

  return html`<div class="batch-items">
    <div class="toolbar">
      <h2>Items${status ? html` <span class="muted">· ${status}</span>` : null}</h2>
      <span class="grow"></span>
      ${status ? html`<a href=${href(`/batches/${encodeURIComponent(id)}`)}>Show all items</a>` : null}
    </div>
    <${ErrorNote} error=${error} />
    ${data === null && !error
      ? html`<p class="loading">Loading the items…</p>`
      : jobs.length === 0 && !error
        ? html`<div class="card empty">${status ? `No ${status} items.` : "No items."}</div>`
        : jobs.length > 0
          ? html`<div class="table-wrap">
              <table class="grid items">
                <thead>
                  <tr>
                    <th scope="col">Item</th>
                    <th scope="col">Status</th>
                    <th scope="col" class="hide-narrow">Arguments</th>
                    <th scope="col">Result or error</th>
                    <th scope="col" class="hide-narrow num">Attempt</th>
                    <th scope="col" class="hide-narrow">Finished</th>
                  </tr>
                </thead>
                <tbody>
                  ${jobs.map((raw) => {
                    const job = current(raw);
                    const ended = ENDED.has(job.status) && ENDED.has(raw.status) && job.status === raw.status;
                    return html`<tr key=${job.id} data-job=${job.id} data-status=${job.status}>
                      <td class="mono item-id"><a href=${href(`/jobs/${encodeURIComponent(job.id)}`)} title=${job.id}
                        ><span class="id-head">${job.id.slice(0, -8)}</span><span class="id-tail">${job.id.slice(-8)}</span></a></td>
                      <td><${Status} status=${job.status} /></td>
                      <td class="hide-narrow mono small args">${brief(job.args)}</td>
                      <td class="outcome">
                        ${ended
                          ? job.status === "succeeded"
                            ? html`<span class="mono small">${brief(job.result)}</span>`
                            : html`<span class="error-text small">${brief(errorLine(job.error), 120)}</span>`
                          : job.progress?.message
                            ? html`<span class="muted small">${brief(job.progress.message)}</span>`
                            : null}
                      </td>
                      <td class="hide-narrow num">${job.attempt ?? ""}</td>
                      <td class="hide-narrow"><${Ago} at=${ended ? job.finished_at : null} /></td>
                    </tr>`;
                  })}
                </tbody>
              </table>
            </div>`
          : null}
    <${Pager}
      label="item pages"
      newer=${pages.newer}
      older=${Boolean(data?.next_cursor)}
      onNewer=${pages.toNewer}
      onOlder=${() => data?.next_cursor && pages.toOlder(data.next_cursor)}
    />
  </div>`;
}
