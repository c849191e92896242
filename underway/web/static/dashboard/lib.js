// What every page of the dashboard shares: Preact with htm, the app's context (API client,
// principal, toasts), the router (paths and filters in the URL), a loader hook, and the small
// components and formats the pages are made of.
//
// Every job-provided string is rendered as text (htm's `${value}` makes a text node or an
// attribute value, never markup): nothing here or in a page sets innerHTML.

import { createContext, h, render } from "./vendor/preact.js";
import {
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useReducer,
  useRef,
  useState,
} from "./vendor/hooks.js";
import htm from "./vendor/htm.js";

export const html = htm.bind(h);
export { render, useCallback, useEffect, useMemo, useReducer, useRef, useState };

// -- configuration ----------------------------------------------------------------------------

/** @param {string} name */
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.getAttribute("content") ?? "";

/** Where the API is (`/api`, `/underway/api`…) and where the dashboard is mounted (`""`…). */
export const config = { api: meta("underway-api") || "/api", base: meta("underway-base") };

// -- the app's context ------------------------------------------------------------------------

/**
 * @typedef {object} AppContext
 * @property {ReturnType<typeof import("./underway.js").createClient>} client the REST client
 * @property {{owner: string, role: string, auth: boolean, via: string, can: Record<string, boolean>,
 *   csrf_token: string|null}} me the principal
 * @property {(message: string, kind?: "ok"|"error") => void} toast a short notice
 * @property {() => void} signOut
 */

export const AppContext = createContext(/** @type {AppContext|null} */ (null));

/** @returns {AppContext} */
export function useApp() {
  const app = useContext(AppContext);
  if (app === null) throw new Error("useApp() outside the dashboard");
  return app;
}

/**
 * Run a change (cancel, retry…) and tell how it went in a toast; `done` is the success notice.
 * @template T @param {AppContext} app @param {() => Promise<T>} change
 * @param {string | ((result: T) => string)} done @returns {Promise<T|undefined>}
 */
export async function act(app, change, done) {
  try {
    const result = await change();
    app.toast(typeof done === "function" ? done(result) : done, "ok");
    return result;
  } catch (error) {
    app.toast(messageOf(error), "error");
    return undefined;
  }
}

/** @param {unknown} error */
export const messageOf = (error) => (error instanceof Error ? error.message : String(error));

// -- routing ----------------------------------------------------------------------------------

const listeners = new Set();

/**
 * The URL of a page: `href("/jobs/abc")`, `href("/", {status: "failed"})` (empty values dropped).
 * @param {string} path @param {Record<string, string|number|null|undefined>} [query]
 */
export function href(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const text = params.toString();
  return `${config.base}${path}${text ? `?${text}` : ""}`;
}

/** Go to a page of the dashboard without reloading. @param {string} url @param {{replace?: boolean}} [options] */
export function navigate(url, options = {}) {
  if (url === location.pathname + location.search) return;
  history[options.replace ? "replaceState" : "pushState"](null, "", url);
  for (const listener of listeners) listener();
}

/** The page's path below the dashboard's prefix, and its query. */
function currentLocation() {
  const path = location.pathname.startsWith(config.base)
    ? location.pathname.slice(config.base.length)
    : location.pathname;
  return { path: path.replace(/\/+$/, "") || "/", query: new URLSearchParams(location.search) };
}

/** The current location, redrawn on every navigation. */
export function useLocation() {
  const [, redraw] = useReducer((n) => n + 1, 0);
  useEffect(() => {
    listeners.add(redraw);
    addEventListener("popstate", redraw);
    return () => {
      listeners.delete(redraw);
      removeEventListener("popstate", redraw);
    };
  }, []);
  return currentLocation();
}

/**
 * Change some of the query's values, keeping the others (filters live in the URL, so a reload
 * or a shared link shows the same view). Empty values are removed.
 * @param {Record<string, string|null|undefined>} changes @param {{replace?: boolean}} [options]
 */
export function setQuery(changes, options = {}) {
  const { path, query } = currentLocation();
  const merged = Object.fromEntries(query);
  Object.assign(merged, changes);
  navigate(href(path === "/" ? "/" : path, merged), options);
}

/** Follow clicks on the dashboard's own links without reloading (and not the API's links). */
export function followLinks() {
  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const link = /** @type {Element} */ (event.target).closest?.("a[href]");
    if (!(link instanceof HTMLAnchorElement) || link.target || link.hasAttribute("download")) return;
    const url = new URL(link.href);
    if (url.origin !== location.origin) return;
    if (url.pathname.startsWith(config.api) || !url.pathname.startsWith(config.base)) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
}

// -- loading ----------------------------------------------------------------------------------

/**
 * Load something for a page: `{data, error, loading, reload}`; again whenever `deps` change.
 * An answer to an older request never overwrites a newer one.
 * @template T @param {() => Promise<T>} load @param {any[]} deps
 */
export function useLoad(load, deps) {
  const [state, setState] = useState(
    /** @type {{data: T|null, error: unknown, loading: boolean}} */ ({ data: null, error: null, loading: true }),
  );
  const latest = useRef(0);
  const run = useCallback(async () => {
    const mine = ++latest.current;
    setState((before) => ({ ...before, loading: true }));
    try {
      const data = await load();
      if (mine === latest.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (mine === latest.current) setState((before) => ({ ...before, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    run();
  }, [run]);
  return { ...state, reload: run };
}

/**
 * Call `tick` every `ms` while the page is visible (and once when it shows again): for the
 * figures no stream carries (queues, workers, charts).
 * @param {() => void} tick @param {number} ms
 */
export function useEvery(tick, ms) {
  const saved = useRef(tick);
  saved.current = tick;
  useEffect(() => {
    const timer = setInterval(() => {
      if (!document.hidden) saved.current();
    }, ms);
    const shown = () => {
      if (!document.hidden) saved.current();
    };
    document.addEventListener("visibilitychange", shown);
    return () => {
      clearInterval(timer);
      document.removeEventListener("visibilitychange", shown);
    };
  }, [ms]);
}

// -- formats ----------------------------------------------------------------------------------

const numbers = new Intl.NumberFormat();

/** @param {number|null|undefined} n */
export const formatNumber = (n) => (n === null || n === undefined ? "–" : numbers.format(n));

/** "3.2 s", "4 min 10 s", "2 h 5 min". @param {number|null|undefined} seconds */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.round((seconds % 86400) / 3600)} h`;
}

/** "12 s ago", "in 3 min". @param {string|null|undefined} at an ISO time */
export function formatAgo(at) {
  if (!at) return "–";
  const seconds = (Date.now() - Date.parse(at)) / 1000;
  if (Math.abs(seconds) < 1) return "now";
  const text = formatDuration(Math.abs(seconds)).replace(/\.\d s$/, " s");
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

/** Seconds from `from` to `to` (or now). @param {string|null|undefined} from @param {string|null} [to] */
export function secondsBetween(from, to) {
  if (!from) return null;
  return ((to ? Date.parse(to) : Date.now()) - Date.parse(from)) / 1000;
}

// -- components -------------------------------------------------------------------------------

/** A job's or batch's status as a coloured badge. @param {{status: string|null|undefined}} props */
export function Status({ status }) {
  const name = status ?? "unknown";
  return html`<span class=${`badge status-${name}`}>${name}</span>`;
}

/**
 * A progress bar: a `<progress>` element (its value in percent), indeterminate without one.
 * @param {{percent: number|null|undefined, status?: string|null, label?: string}} props
 */
export function Bar({ percent, status, label }) {
  const value = percent === null || percent === undefined ? undefined : Math.max(0, Math.min(100, percent));
  return html`<progress
    class=${`bar status-${status ?? "unknown"}`}
    max="100"
    value=${value}
    aria-label=${label ?? "progress"}
  ></progress>`;
}

/** A time as "12 s ago", the exact time in its tooltip. @param {{at: string|null|undefined}} props */
export function Ago({ at }) {
  if (!at) return html`<span class="muted">–</span>`;
  return html`<time datetime=${at} title=${new Date(at).toLocaleString()}>${formatAgo(at)}</time>`;
}

/** A JSON value, pretty-printed as text. @param {{value: any}} props */
export function Json({ value }) {
  return html`<pre class="json">${JSON.stringify(value, null, 2)}</pre>`;
}

/** An error as an alert. @param {{error: unknown}} props */
export function ErrorNote({ error }) {
  if (!error) return null;
  return html`<p class="alert" role="alert">${messageOf(error)}</p>`;
}

/**
 * Older/newer page buttons of a cursor-paged list.
 * @param {{newer: boolean, older: boolean, onNewer: () => void, onOlder: () => void, label?: string}} props
 */
export function Pager({ newer, older, onNewer, onOlder, label }) {
  if (!newer && !older) return null;
  return html`<nav class="pager" aria-label=${label ?? "pages"}>
    <button type="button" disabled=${!newer} onClick=${onNewer}>← Newer</button>
    <button type="button" disabled=${!older} onClick=${onOlder}>Older →</button>
  </nav>`;
}

/**
 * A button that asks for a second click before it acts (no `confirm()` dialog).
 * @param {{label: string, confirm: string, onConfirm: () => any, danger?: boolean, disabled?: boolean}} props
 */
export function ConfirmButton({ label, confirm, onConfirm, danger, disabled }) {
  const [asking, setAsking] = useState(false);
  const yes = useRef(/** @type {HTMLButtonElement|null} */ (null));
  useEffect(() => {
    if (asking) yes.current?.focus(); // a keyboard user answers at once (Tab reaches "No")
  }, [asking]);
  if (!asking) {
    return html`<button type="button" class=${danger ? "danger" : ""} disabled=${disabled}
      onClick=${() => setAsking(true)}>${label}</button>`;
  }
  return html`<span class="confirm" role="group" aria-label=${confirm}>
    <span>${confirm}</span>
    <button type="button" ref=${yes} class=${danger ? "danger" : "primary"}
      onClick=${() => {
        setAsking(false);
        onConfirm();
      }}>Yes</button>
    <button type="button" onClick=${() => setAsking(false)}>No</button>
  </span>`;
}
