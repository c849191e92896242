// Submit a job: pick a task (`?task=` in the URL), fill the form made from its arguments' JSON
// schema (pydantic's), and the job's options; the API's validation errors are shown at their
// fields; on success, the job's page.

import {
  ErrorNote,
  href,
  html,
  messageOf,
  navigate,
  setQuery,
  useApp,
  useLoad,
  useLocation,
  useMemo,
  useState,
} from "./lib.js";
import { FieldInput, fieldsOf, initialTexts, readFields } from "./schema-form.js";

/** @typedef {import("./schema-form.js").Field} Field */

/** The job options' fields (beside the task's arguments). */
const OPTIONS = [
  { name: "queue", label: "Queue", type: "text", help: "Default: the task's queue." },
  { name: "priority", label: "Priority", type: "integer", help: "Higher runs first." },
  { name: "delay", label: "Delay (s)", type: "number", help: "Seconds before it may start." },
  { name: "max_attempts", label: "Max attempts", type: "integer", help: "Default: the task's." },
  { name: "timeout", label: "Timeout (s)", type: "number", help: "Default: the task's." },
  { name: "idempotency_key", label: "Idempotency key", type: "text", help: "The same key submits once." },
];

export function SubmitPage() {
  const { client, me } = useApp();
  const { query } = useLocation();
  const tasks = useLoad(() => client.tasks(), [client]);
  const list = useMemo(
    () => [...(tasks.data?.tasks ?? [])].sort((a, b) => a.name.localeCompare(b.name)),
    [tasks.data],
  );
  const chosen = query.get("task") ?? "";
  const task = list.find((t) => t.name === chosen) ?? null;

  if (me.can && me.can.write === false) {
    return html`<section class="page-submit"><h1>Submit a job</h1>
      <p class="card note">This principal may not submit jobs.</p></section>`;
  }
  return html`<section class="page-submit">
    <div class="page-head"><h1>Submit a job</h1></div>
    <${ErrorNote} error=${tasks.error} />
    ${tasks.data === null && !tasks.error
      ? html`<p class="loading">Loading the tasks…</p>`
      : list.length === 0 && !tasks.error
        ? html`<div class="card empty">
            <p>No task is registered with this server.</p>
            <p class="muted">Start it with <code>--app</code> naming your app to submit from here.</p>
          </div>`
        : html`<div class="card task-pick">
            <label for="task">Task</label>
            <select id="task" value=${task ? task.name : ""}
              onChange=${(/** @type {any} */ e) => setQuery({ task: e.target.value || null }, { replace: true })}>
              <option value="" disabled>Choose a task…</option>
              ${list.map((t) => html`<option key=${t.name} value=${t.name}>${t.name}</option>`)}
            </select>
            ${chosen && !task && list.length ? html`<p class="alert" role="alert">No task named ${chosen}.</p>` : null}
            ${task?.doc ? html`<p class="task-doc muted">${task.doc}</p>` : null}
          </div>
          ${task ? html`<${TaskForm} key=${task.name} task=${task} />` : null}`}
  </section>`;
}

/** @param {{task: any}} props */
function TaskForm({ task }) {
  const app = useApp();
  const fields = useMemo(() => fieldsOf(task.schema), [task]);
  const [values, setValues] = useState(() => initialTexts(fields));
  const [options, setOptions] = useState(/** @type {Record<string, string>} */ ({}));
  const [errors, setErrors] = useState(/** @type {Record<string, string>} */ ({}));
  const [problem, setProblem] = useState(/** @type {unknown} */ (null));
  const [busy, setBusy] = useState(false);
  const [opened, setShowOptions] = useState(false);
  const showOptions = opened || OPTIONS.some((o) => errors[o.name]) || Boolean(errors.labels);

  /** @param {string} name @param {any} value */
  const set = (name, value) => setValues((before) => ({ ...before, [name]: value }));
  /** @param {string} name @param {string} value */
  const setOption = (name, value) => setOptions((before) => ({ ...before, [name]: value }));

  /** @param {SubmitEvent} event */
  const submit = async (event) => {
    event.preventDefault();
    const { values: args, errors: wrong } = readFields(fields, values);
    /** @type {Record<string, string>} */
    const found = Object.fromEntries(Object.entries(wrong).map(([name, error]) => [`args.${name}`, error]));
    /** @type {Record<string, any>} */
    const jobOptions = {};
    for (const option of OPTIONS) {
      const text = (options[option.name] ?? "").trim();
      if (text === "") continue;
      if (option.type === "text") jobOptions[option.name] = text;
      else if (Number.isFinite(Number(text))) jobOptions[option.name] = Number(text);
      else found[option.name] = "Not a number.";
    }
    const labels = (options.labels ?? "").trim();
    if (labels) {
      /** @type {Record<string, string>} */
      const parsed = {};
      for (const line of labels.split("\n").map((l) => l.trim()).filter(Boolean)) {
        const at = line.indexOf("=");
        if (at <= 0) {
          found.labels = `"${line}" is not key=value.`;
          break;
        }
        parsed[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      jobOptions.labels = parsed;
    }
    setErrors(found);
    if (Object.keys(found).length) {
      setProblem(new Error("Some values need fixing (see below)."));
      return;
    }
    setProblem(null);
    setBusy(true);
    try {
      const job = await app.client.submit(task.name, args, jobOptions);
      app.toast(`Job ${job.id} submitted`, "ok");
      navigate(href(`/jobs/${encodeURIComponent(job.id)}`));
    } catch (error) {
      setProblem(error);
      setErrors(errorsOf(error));
    } finally {
      setBusy(false);
    }
  };

  const taskDefaults = [
    task.queue ? `queue ${task.queue}` : "",
    task.max_attempts ? `${task.max_attempts} attempt${task.max_attempts === 1 ? "" : "s"}` : "",
    task.timeout ? `timeout ${task.timeout} s` : "",
  ].filter(Boolean);

  return html`<form class="card submit-form" onSubmit=${submit} novalidate aria-label=${`Arguments of ${task.name}`}>
    <h2>Arguments</h2>
    ${fields.length === 0 ? html`<p class="muted">This task takes no arguments.</p>` : null}
    <div class="fields">
      ${fields.map(
        (field) => html`<${FieldInput} key=${field.name} field=${field} prefix="arg" showName=${true}
          value=${values[field.name]} error=${errors[`args.${field.name}`]}
          onChange=${(/** @type {any} */ v) => set(field.name, v)} />`,
      )}
    </div>
    <div class="submit-options">
      <button type="button" class="link toggle" aria-expanded=${showOptions ? "true" : "false"}
        aria-controls="submit-options" onClick=${() => setShowOptions(!showOptions)}>Job options</button>
      ${taskDefaults.length ? html`<p class="defaults muted small">Task defaults: ${taskDefaults.join(", ")}.</p>` : null}
      <div class="fields" id="submit-options" hidden=${!showOptions}>
        ${OPTIONS.map((option) => {
          const id = `option-${option.name}`;
          const error = errors[option.name];
          return html`<div key=${option.name} class=${`field${error ? " invalid" : ""}`}>
            <label for=${id}>${option.label}</label>
            <input id=${id} name=${option.name}
              type=${option.type === "text" ? "text" : "number"}
              step=${option.type === "integer" ? "1" : option.type === "number" ? "any" : undefined}
              min=${option.name === "max_attempts" ? "1" : option.name === "delay" || option.name === "timeout" ? "0" : undefined}
              placeholder=${option.name === "queue" ? task.queue ?? "" : ""}
              value=${options[option.name] ?? ""} aria-invalid=${error ? "true" : undefined}
              aria-describedby=${`${id}-help`}
              onInput=${(/** @type {any} */ e) => setOption(option.name, e.target.value)} />
            <small id=${`${id}-help`} class=${error ? "field-error" : "help"}>${error ?? option.help}</small>
          </div>`;
        })}
        <div class=${`field wide${errors.labels ? " invalid" : ""}`}>
          <label for="option-labels">Labels</label>
          <textarea id="option-labels" name="labels" rows="3" placeholder="key=value, one per line"
            value=${options.labels ?? ""} aria-invalid=${errors.labels ? "true" : undefined}
            aria-describedby="option-labels-help"
            onInput=${(/** @type {any} */ e) => setOption("labels", e.target.value)}></textarea>
          <small id="option-labels-help" class=${errors.labels ? "field-error" : "help"}>
            ${errors.labels ?? "key=value, one per line; the jobs page filters by them."}
          </small>
        </div>
      </div>
    </div>
    ${problem ? html`<div class="alert submit-problem" role="alert">
        <strong>Not submitted:</strong> ${messageOf(problem)}
        ${otherErrors(problem, fields).length
          ? html`<ul>${otherErrors(problem, fields).map((line) => html`<li>${line}</li>`)}</ul>`
          : null}
      </div>` : null}
    <div class="toolbar">
      <button class="primary" type="submit" disabled=${busy}>${busy ? "Submitting…" : `Submit ${task.name}`}</button>
    </div>
  </form>`;
}

/**
 * The API's 422 details by field: `args.<name>` for an argument, the option's name for a job
 * option.
 * @param {any} error @returns {Record<string, string>}
 */
function errorsOf(error) {
  /** @type {Record<string, string>} */
  const found = {};
  for (const { key, message } of detailsOf(error)) {
    if (key) found[key] = found[key] ? `${found[key]} ${message}` : message;
  }
  return found;
}

/** @param {any} error @returns {{key: string|null, path: string, message: string}[]} */
function detailsOf(error) {
  const details = Array.isArray(error?.details) ? error.details : [];
  return details.map((/** @type {any} */ detail) => {
    let loc = Array.isArray(detail?.loc) ? detail.loc.map(String) : [];
    if (loc[0] === "body") loc = loc.slice(1);
    const message = String(detail?.message ?? detail?.msg ?? "invalid");
    let key = null;
    if (error.code === "invalid_arguments" && loc.length) key = `args.${loc[0]}`;
    else if (loc[0] === "args" && loc.length > 1) key = `args.${loc[1]}`;
    else if (loc.length) key = loc[0];
    return { key, path: loc.join("."), message };
  });
}

/** The details no field shows. @param {any} error @param {Field[]} fields */
function otherErrors(error, fields) {
  const shown = new Set([
    ...fields.map((f) => `args.${f.name}`),
    ...OPTIONS.map((o) => o.name),
    "labels",
  ]);
  return detailsOf(error)
    .filter((detail) => !detail.key || !shown.has(detail.key))
    .map((detail) => (detail.path ? `${detail.path}: ${detail.message}` : detail.message));
}
