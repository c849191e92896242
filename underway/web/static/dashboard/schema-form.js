// A form made from a JSON schema (pydantic's): a task's arguments on the submit page, the
// structured answer to a waiting job's question on the job page. `fieldsOf` reads the schema
// into fields, `initialTexts` gives their inputs' first texts, `readFields` turns the texts back
// into typed values (or an error message per field), and `FieldInput` draws one controlled input
// with its label, help and error. Schema-provided strings (titles, descriptions, options) are text.

import { html, messageOf } from "./lib.js";

/**
 * @typedef {{name: string, kind: "text"|"integer"|"number"|"boolean"|"enum"|"strings"|"json",
 *   title: string, description: string, required: boolean, nullable: boolean, initial: any,
 *   options: any[], minimum?: number, maximum?: number, minLength?: number, maxLength?: number}} Field
 */

/** @param {any} schema @returns {Record<string, any>} */
const objectOf = (schema) => (schema && typeof schema === "object" ? schema : {});

/** A schema with its `$ref` (to `#/$defs/…`) and one-item `allOf` followed. @param {any} schema @param {any} root */
function resolve(schema, root) {
  let found = objectOf(schema);
  for (let depth = 0; depth < 10; depth++) {
    if (typeof found.$ref === "string" && found.$ref.startsWith("#/")) {
      const target = found.$ref
        .slice(2)
        .split("/")
        .reduce((/** @type {any} */ node, key) => node?.[key], root);
      const { $ref, ...rest } = found;
      found = { ...objectOf(target), ...rest };
    } else if (Array.isArray(found.allOf) && found.allOf.length === 1) {
      const { allOf, ...rest } = found;
      found = { ...objectOf(allOf[0]), ...rest };
    } else break;
  }
  return found;
}

/**
 * A schema without its `null` alternative (`anyOf: [X, {type: "null"}]`, `type: [X, "null"]`).
 * @param {Record<string, any>} prop @param {any} root @returns {{prop: Record<string, any>, nullable: boolean}}
 */
function withoutNull(prop, root) {
  let nullable = false;
  const union = prop.anyOf ?? prop.oneOf;
  if (Array.isArray(union)) {
    const others = union.map((one) => resolve(one, root)).filter((one) => one.type !== "null");
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
  return { prop, nullable };
}

/** An option's value in a `<select>` (and its label): a string as is, anything else as JSON. @param {any} option */
const optionText = (option) => (typeof option === "string" ? option : JSON.stringify(option));

/** How a field is drawn. @param {Record<string, any>} prop @param {any} root @returns {Field["kind"]} */
function kindOf(prop, root) {
  const choices = Array.isArray(prop.enum) ? prop.enum : "const" in prop ? [prop.const] : [];
  if (choices.length && new Set(choices.map(optionText)).size === choices.length) return "enum";
  if (prop.type === "string") return "text";
  if (prop.type === "integer" || prop.type === "number" || prop.type === "boolean") return prop.type;
  if (prop.type === "array" && resolve(prop.items, root).type === "string") return "strings";
  return "json";
}

/**
 * One field from its schema (`raw`; `root` holds the `$defs`); `title` is used when the schema
 * has none.
 * @param {string} name @param {any} raw @param {any} root
 * @param {{required?: boolean, title?: string}} [options] @returns {Field}
 */
export function fieldOf(name, raw, root, { required = false, title = name } = {}) {
  const { prop, nullable } = withoutNull(resolve(raw, root), root);
  const kind = kindOf(prop, root);
  return {
    name,
    kind,
    title: prop.title ?? title,
    description: prop.description ?? "",
    required,
    nullable,
    initial: "default" in prop ? prop.default : undefined,
    options: kind === "enum" ? (prop.enum ?? [prop.const]) : [],
    minimum: prop.minimum,
    maximum: prop.maximum,
    minLength: prop.minLength,
    maxLength: prop.maxLength,
  };
}

/** The fields of an object's schema, one per property. @param {any} schema @returns {Field[]} */
export function fieldsOf(schema) {
  const top = resolve(schema, schema);
  const required = new Set(Array.isArray(top.required) ? top.required : []);
  return Object.entries(objectOf(top.properties)).map(([name, raw]) =>
    fieldOf(name, raw, schema, { required: required.has(name) }),
  );
}

/** The text (or checkbox state) an input starts with: the field's default. @param {Field} field */
export function initialText(field) {
  const value = field.initial;
  if (field.kind === "boolean") return value === true;
  if (value === undefined || value === null) return "";
  if (field.kind === "strings") return Array.isArray(value) ? value.join("\n") : "";
  if (field.kind === "json") return JSON.stringify(value, null, 2);
  if (field.kind === "enum") return optionText(value);
  return String(value);
}

/** Every field's first text, by name. @param {Field[]} fields @returns {Record<string, any>} */
export const initialTexts = (fields) => Object.fromEntries(fields.map((f) => [f.name, initialText(f)]));

/**
 * A field's value from its input: `{value}`, `{skip: true}` (left empty: the default applies)
 * or `{error}`. A number is not judged further (1.5 for an integer): the API or the browser says why.
 * @param {Field} field @param {any} text
 * @returns {{value: any} | {skip: true} | {error: string}}
 */
export function valueOf(field, text) {
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
      return Number.isFinite(n) ? { value: n } : { error: "Not a number." };
    }
    case "enum": {
      const at = field.options.findIndex((option) => optionText(option) === text);
      return at < 0 ? { error: "Pick one of the options." } : { value: field.options[at] };
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

/**
 * The fields' values from their texts: `values` (fields left empty without a default are
 * left out) and `errors`, both by name.
 * @param {Field[]} fields @param {Record<string, any>} texts
 */
export function readFields(fields, texts) {
  /** @type {Record<string, any>} */
  const values = {};
  /** @type {Record<string, string>} */
  const errors = {};
  for (const field of fields) {
    const outcome = valueOf(field, texts[field.name]);
    if ("error" in outcome) errors[field.name] = outcome.error;
    else if ("value" in outcome) values[field.name] = outcome.value;
  }
  return { values, errors };
}

const KIND_NOTES = {
  text: "text",
  integer: "whole number",
  number: "number",
  boolean: "yes / no",
  enum: "one of the options",
  strings: "list of text, one per line",
  json: "JSON",
};

/** The help under a field: its description, what it takes, whether it may be left empty. @param {Field} field */
function helpOf(field) {
  const optional = field.required ? "" : field.nullable ? "optional (may be empty)" : "optional";
  return [field.description, KIND_NOTES[field.kind], optional].filter(Boolean).join(" · ");
}

/**
 * The input element of a field. @param {Field} field @param {Record<string, any>} common
 * @param {any} value @param {(value: any) => void} onChange
 */
function inputOf(field, common, value, onChange) {
  const text = (/** @type {any} */ e) => onChange(e.target.value);
  switch (field.kind) {
    case "boolean":
      return html`<input ...${common} type="checkbox" checked=${Boolean(value)}
        onChange=${(/** @type {any} */ e) => onChange(e.target.checked)} />`;
    case "enum":
      return html`<select ...${common} value=${value} onChange=${text}>
        ${!field.required || field.nullable || field.initial === undefined
          ? html`<option value="">${field.required ? "Choose…" : "(default)"}</option>`
          : null}
        ${field.options.map((option) => html`<option key=${optionText(option)} value=${optionText(option)}>${optionText(option)}</option>`)}
      </select>`;
    case "integer":
    case "number":
      return html`<input ...${common} type="number" step=${field.kind === "integer" ? "1" : "any"}
        inputmode=${field.kind === "integer" ? "numeric" : "decimal"} min=${field.minimum} max=${field.maximum}
        value=${value} onInput=${text} />`;
    case "strings":
      return html`<textarea ...${common} rows="3" value=${value} onInput=${text}
        placeholder="one per line (or comma-separated)"></textarea>`;
    case "json":
      return html`<textarea ...${common} rows="4" class="json-input" value=${value} onInput=${text}
        placeholder="JSON" spellcheck=${false}></textarea>`;
    default:
      return html`<input ...${common} type="text" minlength=${field.minLength} maxlength=${field.maxLength}
        autocomplete="off" value=${value} onInput=${text} />`;
  }
}

/**
 * One field of a form: its label (a `*` when required; its property's name beside the title
 * with `showName`), a controlled input (id `${prefix}-${name}`) and its help, or its error.
 * A required field gets `required` (a form without `novalidate` lets the browser check it and
 * the schema's limits) and `aria-required`; a checkbox gets neither, as it always has a value.
 * @param {{field: Field, value: any, error?: string, onChange: (value: any) => void, prefix: string,
 *   showName?: boolean}} props
 */
export function FieldInput({ field, value, error, onChange, prefix, showName = false }) {
  const id = `${prefix}-${field.name}`;
  const helpId = `${id}-help`;
  const boolean = field.kind === "boolean";
  const common = {
    id,
    name: field.name,
    required: field.required && !boolean,
    "aria-invalid": error ? "true" : undefined,
    "aria-describedby": helpId,
    "aria-required": field.required && !boolean ? "true" : undefined,
  };
  const input = inputOf(field, common, value, onChange);
  const mark = field.required ? html`<span class="required" title="required" aria-hidden="true">*</span>` : null;
  const wide = field.kind === "strings" || field.kind === "json";
  return html`<div class=${`field kind-${field.kind}${wide ? " wide" : ""}${error ? " invalid" : ""}`}
    data-field=${field.name}>
    ${boolean
      ? html`<label class="check" for=${id}>${input} <span>${field.title}</span></label>`
      : html`<label for=${id}>${field.title} ${mark} ${showName ? html`<code class="arg-name">${field.name}</code>` : null}</label>
        ${input}`}
    <small id=${helpId} class=${error ? "field-error" : "help"}>${error ?? helpOf(field)}</small>
  </div>`;
}
