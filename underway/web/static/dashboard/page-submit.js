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

/**
 * @typedef {{name: string, kind: "text"|"integer"|"number"|"boolean"|"enum"|"strings"|"json",
 *   title: string, description: string, required: boolean, nullable: boolean, initial: any,
 *   options: any[]}} Field
 */

/** A schema with its `$ref` (to `#/$defs/…`) and one-item `allOf` followed. @param {any} schema @param {any} root */
function resolve(schema, root) {
  let found = schema ?? {};
  for (let depth = 0; depth < 10; depth++) {
    if (typeof found.$ref === "string" && found.$ref.startsWith("#/")) {
      const target = found.$ref
        .slice(2)
        .split("/")
        .reduce((node, key) => node?.[key], root);
      const { $ref, ...rest } = found;
      found = { ...target, ...rest };
    } else if (Array.isArray(found.allOf) && found.allOf.length === 1) {
      const { allOf, ...rest } = found;
      found = { ...allOf[0], ...rest };
    } else break;
  }
  return found;
}

/**
 * The form's fields from a task's argument schema.
 * @param {any} schema @returns {Field[]}
 */
export function fieldsOf(schema) {
  const properties = schema?.properties ?? {};
  const required = new Set(schema?.required ?? []);
  return Object.entries(properties).map(([name, raw]) => {
    let prop = resolve(raw, schema);
    let nullable = false;
    const union = prop.anyOf ?? prop.oneOf;
    if (Array.isArray(union)) {
      const others = union.map((one) => resolve(one, schema)).filter((one) => one.type !== "null");
      nullable = others.length < union.length;
      if (others.length === 1) {
        const { anyOf, oneOf, ...rest } = prop;
        prop = { ...others[0], ...rest };
      }
    }
    if (Array.isArray(prop.type) && prop.type.includes("null")) {
      nullable = true;
      const types = prop.type.filter((/** @type {string} */ t) => t !== "null");
      prop = { ...prop, type: types.length === 1 ? types[0] : types };
    }
    /** @type {Field["kind"]} */
    let kind = "json";
    if (Array.isArray(prop.enum) && prop.enum.every((v) => ["string", "number"].includes(typeof v))) kind = "enum";
    else if ("const" in prop && typeof prop.const === "string") kind = "enum";
    else if (prop.type === "string") kind = "text";
    else if (prop.type === "integer") kind = "integer";
    else if (prop.type === "number") kind = "number";
    else if (prop.type === "boolean") kind = "boolean";
    else if (prop.type === "array" && resolve(prop.items, schema)?.type === "string") kind = "strings";
    const options = kind === "enum" ? (prop.enum ?? [prop.const]) : [];
    const initial = "default" in prop ? prop.default : "default" in raw ? raw.default : undefined;
    return {
      name,
      kind,
      title: prop.title ?? raw.title ?? name,
      description: prop.description ?? raw.description ?? "",
      required: required.has(name),
      nullable,
      initial,
      options,
    };
  });
}

/** The text an input starts with for a field's default. @param {Field} field */
function initialText(field) {
  const value = field.initial;
  if (field.kind === "boolean") return Boolean(value);
  if (value === undefined || value === null) return "";
  if (field.kind === "strings") return Array.isArray(value) ? value.join("\n") : "";
  if (field.kind === "json") return JSON.stringify(value, null, 2);
  return String(value);
}

/**
 * A field's value from its input: `{value}`, `{skip: true}` (left empty: the default applies)
 * or `{error}`.
 * @param {Field} field @param {any} text
 */
function valueOf(field, text) {
  if (field.kind === "boolean") return { value: Boolean(text) };
  const trimmed = typeof text === "string" ? text.trim() : "";
  if (trimmed === "") {
    if (field.kind === "text" && field.required) return { value: "" };
    if (field.required && !field.nullable) return { error: "Required." };
    if (field.required) return { value: null };
    return { skip: true };
  }
  switch (field.kind) {
    case "text":
      return { value: text };
    case "integer":
    case "number": {
      const n = Number(trimmed);
      // a number the API will judge (1.5 for an integer: it says why); anything else is no number
      return Number.isFinite(n) ? { value: n } : { error: "Not a number." };
    }
    case "enum": {
      const found = field.options.find((option) => String(option) === text);
      return found === undefined ? { error: "Pick one of the options." } : { value: found };
    }
    case "strings": {
      const parts = trimmed.includes("\n") ? trimmed.split("\n") : trimmed.split(",");
      return { value: parts.map((part) => part.trim()).filter((part) => part !== "") };
    }
    default:
      try {
        return { value: JSON.parse(trimmed) };
      } catch (error) {
        return { error: `Not valid JSON: ${messageOf(error)}` };
      }
  }
}

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
  const [values, setValues] = useState(() => Object.fromEntries(fields.map((f) => [f.name, initialText(f)])));
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
    /** @type {Record<string, string>} */
    const found = {};
    /** @type {Record<string, any>} */
    const args = {};
    for (const field of fields) {
      const outcome = valueOf(field, values[field.name]);
      if ("error" in outcome) found[`args.${field.name}`] = outcome.error;
      else if (!("skip" in outcome)) args[field.name] = outcome.value;
    }
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
        (field) => html`<${FieldInput} key=${field.name} field=${field} value=${values[field.name]}
          error=${errors[`args.${field.name}`]} onChange=${(/** @type {any} */ v) => set(field.name, v)} />`,
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

/** @param {{field: Field, value: any, error?: string, onChange: (value: any) => void}} props */
function FieldInput({ field, value, error, onChange }) {
  const id = `arg-${field.name}`;
  const helpId = `${id}-help`;
  const common = {
    id,
    name: field.name,
    "aria-invalid": error ? "true" : undefined,
    "aria-describedby": helpId,
    "aria-required": field.required ? "true" : undefined,
  };
  const text = (/** @type {any} */ e) => onChange(e.target.value);
  let input;
  switch (field.kind) {
    case "boolean":
      input = html`<input ...${common} type="checkbox" checked=${Boolean(value)}
        onChange=${(/** @type {any} */ e) => onChange(e.target.checked)} />`;
      break;
    case "enum":
      input = html`<select ...${common} value=${value} onChange=${text}>
        ${!field.required || field.nullable || field.initial === undefined
          ? html`<option value="">${field.required ? "Choose…" : "(default)"}</option>`
          : null}
        ${field.options.map((option) => html`<option key=${String(option)} value=${String(option)}>${String(option)}</option>`)}
      </select>`;
      break;
    case "integer":
    case "number":
      input = html`<input ...${common} type="number" step=${field.kind === "integer" ? "1" : "any"}
        value=${value} onInput=${text} />`;
      break;
    case "strings":
      input = html`<textarea ...${common} rows="3" value=${value} onInput=${text}
        placeholder="one per line (or comma-separated)"></textarea>`;
      break;
    case "json":
      input = html`<textarea ...${common} rows="4" class="json-input" value=${value} onInput=${text}
        placeholder="JSON" spellcheck="false"></textarea>`;
      break;
    default:
      input = html`<input ...${common} type="text" value=${value} onInput=${text} />`;
  }
  const kindNote = {
    text: "text",
    integer: "whole number",
    number: "number",
    boolean: "yes / no",
    enum: "one of the options",
    strings: "list of text, one per line",
    json: "JSON",
  }[field.kind];
  const help = [field.description, kindNote, field.required ? "" : field.nullable ? "optional (may be empty)" : "optional"]
    .filter(Boolean)
    .join(" · ");
  return html`<div class=${`field kind-${field.kind}${field.kind === "strings" || field.kind === "json" ? " wide" : ""}${error ? " invalid" : ""}`}
    data-field=${field.name}>
    ${field.kind === "boolean"
      ? html`<label class="check" for=${id}>${input} <span>${field.title}</span>
          ${field.required ? html`<span class="required" aria-hidden="true">*</span>` : null}</label>`
      : html`<label for=${id}>${field.title}
          ${field.required ? html`<span class="required" title="required">*</span>` : null}
          <code class="arg-name">${field.name}</code></label>
        ${input}`}
    <small id=${helpId} class=${error ? "field-error" : "help"}>${error ?? help}</small>
  </div>`;
}
