// Queues and workers: each queue's depth, running, waiting, throughput, oldest wait, pause and
// concurrency limit (the controls for admins only); the live workers (admins) with the jobs each
// runs now. No stream carries these figures: the page reads them every 2 s while it is visible.

import {
  act,
  Ago,
  ErrorNote,
  formatDuration,
  formatNumber,
  href,
  html,
  Status,
  useApp,
  useEvery,
  useLoad,
  useMemo,
  useState,
} from "./lib.js";

/** Current jobs shown per worker before "+N more". */
const JOBS_SHOWN = 6;

export function QueuesPage() {
  const { client, me } = useApp();
  const admin = me.role === "admin";
  const queues = useLoad(() => client.queues(), [client]);
  const workers = useLoad(() => (admin ? client.workers() : Promise.resolve(null)), [client, admin]);
  const running = useLoad(
    () => (admin ? client.list({ status: ["running"], limit: 200 }) : Promise.resolve(null)),
    [client, admin],
  );
  useEvery(() => {
    queues.reload();
    if (admin) {
      workers.reload();
      running.reload();
    }
  }, 2000);

  const list = queues.data?.queues ?? [];
  return html`<section class="page-queues">
    <div class="page-head">
      <h1>Queues</h1>
      <span class="muted">refreshed every 2 s</span>
    </div>
    <${ErrorNote} error=${queues.error} />
    ${queues.data === null && !queues.error
      ? html`<p class="loading">Loading…</p>`
      : list.length === 0 && !queues.error
        ? html`<div class="card empty">No queue has jobs yet.</div>`
        : list.length > 0
          ? html`<div class="table-wrap">
              <table class="grid queues">
                <thead>
                  <tr>
                    <th scope="col">Queue</th>
                    <th scope="col" class="hide-narrow">State</th>
                    <th scope="col" class="num">Queued</th>
                    <th scope="col" class="num">Running</th>
                    <th scope="col" class="num hide-narrow">Waiting</th>
                    <th scope="col" class="num hide-narrow" title="jobs finished in the last minute">Done / min</th>
                    <th scope="col" class="hide-narrow">Oldest wait</th>
                    <th scope="col">Concurrency limit</th>
                    ${admin ? html`<th scope="col"><span class="visually-hidden">Actions</span></th>` : null}
                  </tr>
                </thead>
                <tbody>
                  ${list.map(
                    (queue) => html`<${QueueRow} key=${queue.name} queue=${queue} admin=${admin}
                      onChanged=${queues.reload} />`,
                  )}
                </tbody>
              </table>
            </div>`
          : null}

    <h2>Workers</h2>
    ${admin
      ? html`<${Workers} workers=${workers} running=${running} />`
      : html`<p class="card note muted">Workers are shown to admins only.</p>`}
  </section>`;
}

/** @param {{queue: any, admin: boolean, onChanged: () => void}} props */
function QueueRow({ queue, admin, onChanged }) {
  const app = useApp();
  const { client } = app;
  const pause = async () => {
    const done = await act(
      app,
      () => (queue.paused ? client.resumeQueue(queue.name) : client.pauseQueue(queue.name)),
      queue.paused ? `Queue ${queue.name} resumed` : `Queue ${queue.name} paused`,
    );
    if (done) onChanged();
  };
  return html`<tr data-queue=${queue.name}>
    <th scope="row" class="mono">
      ${queue.name}
      ${queue.paused ? html` <span class="show-narrow"><${Status} status="paused" /></span>` : null}
    </th>
    <td class="hide-narrow">
      ${queue.paused ? html`<${Status} status="paused" />` : html`<span class="muted">active</span>`}
    </td>
    <td class="num" data-role="depth">${formatNumber(queue.depth)}</td>
    <td class="num" data-role="running">${formatNumber(queue.running)}</td>
    <td class="num hide-narrow" data-role="waiting">${formatNumber(queue.waiting)}</td>
    <td class="num hide-narrow" data-role="throughput">${formatNumber(queue.throughput_1m)}</td>
    <td class="hide-narrow">${queue.oldest_queued_age_s == null ? html`<span class="muted">–</span>` : formatDuration(queue.oldest_queued_age_s)}</td>
    <td data-role="limit">
      ${admin
        ? html`<${LimitForm} queue=${queue} onChanged=${onChanged} />`
        : queue.concurrency == null
          ? html`<span class="muted">none</span>`
          : formatNumber(queue.concurrency)}
    </td>
    ${admin
      ? html`<td class="actions">
          <button type="button" onClick=${pause} aria-label=${`${queue.paused ? "Resume" : "Pause"} queue ${queue.name}`}>
            ${queue.paused ? "Resume" : "Pause"}
          </button>
        </td>`
      : null}
  </tr>`;
}

/** Set or clear a queue's concurrency limit. @param {{queue: any, onChanged: () => void}} props */
function LimitForm({ queue, onChanged }) {
  const app = useApp();
  // null: not being edited, the input shows the queue's limit (and follows it)
  const [draft, setDraft] = useState(/** @type {string|null} */ (null));
  const [busy, setBusy] = useState(false);
  const current = queue.concurrency == null ? "" : String(queue.concurrency);
  const inputId = `limit-${queue.name}`;
  /** @param {number|null} value */
  const save = async (value) => {
    setBusy(true);
    const done = await act(
      app,
      () => app.client.limitQueue(queue.name, value),
      value === null ? `Queue ${queue.name}: no concurrency limit` : `Queue ${queue.name}: at most ${value} at once`,
    );
    setBusy(false);
    if (done) {
      setDraft(null);
      onChanged();
    }
  };
  /** @param {SubmitEvent} event */
  const submit = (event) => {
    event.preventDefault();
    const text = (draft ?? current).trim();
    if (text === "") return save(null);
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) {
      app.toast("A concurrency limit is a whole number, 1 or more", "error");
      return;
    }
    return save(value);
  };
  return html`<form class="limit-form" onSubmit=${submit}>
    <label class="visually-hidden" for=${inputId}>Concurrency limit of queue ${queue.name}</label>
    <input id=${inputId} name="concurrency" type="number" min="1" step="1" inputmode="numeric"
      placeholder="none" value=${draft ?? current}
      onInput=${(/** @type {any} */ e) => setDraft(e.target.value)} />
    <button type="submit" disabled=${busy || (draft === null || draft.trim() === current)}>Set</button>
    ${queue.concurrency != null
      ? html`<button type="button" class="link" disabled=${busy} onClick=${() => save(null)}
          aria-label=${`Clear the concurrency limit of queue ${queue.name}`}>Clear</button>`
      : null}
  </form>`;
}

/** @param {{workers: any, running: any}} props */
function Workers({ workers, running }) {
  const byWorker = useMemo(() => {
    /** @type {Record<string, any[]>} */
    const found = {};
    for (const job of running.data?.jobs ?? []) {
      if (job.worker_id) (found[job.worker_id] ??= []).push(job);
    }
    return found;
  }, [running.data]);
  const list = workers.data?.workers ?? [];
  if (workers.error) return html`<${ErrorNote} error=${workers.error} />`;
  if (workers.data === null) return html`<p class="loading">Loading…</p>`;
  if (list.length === 0) {
    return html`<div class="card empty">
      <p>No worker has been seen lately.</p>
      <p class="muted">Start one with <code>underway worker</code>.</p>
    </div>`;
  }
  return html`<div class="table-wrap">
    <table class="grid workers">
      <thead>
        <tr>
          <th scope="col">Worker</th>
          <th scope="col" class="hide-narrow">Host</th>
          <th scope="col" class="hide-narrow num">PID</th>
          <th scope="col" class="hide-narrow">Queues</th>
          <th scope="col" class="num">Running</th>
          <th scope="col" class="hide-narrow">Started</th>
          <th scope="col">Last seen</th>
          <th scope="col">Current jobs</th>
        </tr>
      </thead>
      <tbody>
        ${list.map((worker) => {
          const jobs = byWorker[worker.id] ?? [];
          const count = Math.max(worker.running ?? 0, jobs.length);
          return html`<tr key=${worker.id} data-worker=${worker.id}>
            <th scope="row" class="mono small">${worker.id}</th>
            <td class="hide-narrow">${worker.host}</td>
            <td class="hide-narrow num">${worker.pid}</td>
            <td class="hide-narrow">
              ${worker.queues?.length
                ? worker.queues.map((name) => html`<span key=${name} class="label-chip mono">${name}</span> `)
                : html`<span class="muted">all</span>`}
            </td>
            <td class="num"><span data-role="running">${formatNumber(count)}</span><span class="muted"> / ${formatNumber(worker.concurrency)}</span></td>
            <td class="hide-narrow"><${Ago} at=${worker.started_at} /></td>
            <td><${Ago} at=${worker.last_seen} /></td>
            <td class="current-jobs">
              ${jobs.length === 0
                ? html`<span class="muted">idle</span>`
                : html`<ul class="worker-jobs">
                    ${jobs.slice(0, JOBS_SHOWN).map(
                      (job) => html`<li key=${job.id}>
                        <a href=${href(`/jobs/${encodeURIComponent(job.id)}`)} title=${job.id}>
                          <span class="task">${job.task}</span> <span class="mono small">${job.id.slice(-8)}</span>
                        </a>
                        ${job.progress?.percent != null
                          ? html` <span class="muted small">${Math.round(job.progress.percent)} %</span>`
                          : null}
                      </li>`,
                    )}
                    ${jobs.length > JOBS_SHOWN
                      ? html`<li class="muted small">+${formatNumber(jobs.length - JOBS_SHOWN)} more</li>`
                      : null}
                  </ul>`}
            </td>
          </tr>`;
        })}
      </tbody>
    </table>
  </div>`;
}
