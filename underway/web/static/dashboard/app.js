// The dashboard's entry: who is signed in (GET /me, or the sign-in form), the layout, and the
// page for the current path.

import { createClient } from "./underway.js";
import {
  AppContext,
  config,
  ErrorNote,
  followLinks,
  href,
  html,
  messageOf,
  render,
  useCallback,
  useEffect,
  useLocation,
  useMemo,
  useRef,
  useState,
} from "./lib.js";
import { BatchesPage, BatchPage } from "./page-batches.js";
import { JobPage } from "./page-job.js";
import { JobsPage } from "./page-jobs.js";
import { OverviewPage } from "./page-overview.js";
import { QueuesPage } from "./page-queues.js";
import { SubmitPage } from "./page-submit.js";

/** The pages: the first segment of the path, and the page drawn for it. */
const PAGES = [
  { path: "/", title: "Jobs", page: JobsPage },
  { path: "/batches", title: "Batches", page: BatchesPage },
  { path: "/queues", title: "Queues", page: QueuesPage },
  { path: "/overview", title: "Overview", page: OverviewPage },
  { path: "/submit", title: "Submit", page: SubmitPage },
];

/** The page for a path, and its parameter (a job's or batch's id). @param {string} path */
function route(path) {
  const [, first = "", id] = path.split("/").map((part) => decodeURIComponent(part));
  if (first === "jobs" && id) return { page: JobPage, id, section: "/" };
  if (first === "batches" && id) return { page: BatchPage, id, section: "/batches" };
  if (first === "" || first === "jobs") return { page: JobsPage, id: null, section: "/" };
  const found = PAGES.find((page) => page.path === `/${first}`);
  return found ? { page: found.page, id: null, section: found.path } : { page: NotFound, id: null, section: "" };
}

function NotFound() {
  return html`<section><h1>No such page</h1><p><a href=${href("/")}>See the jobs</a></p></section>`;
}

/** The API key form: `POST /session` sets an HttpOnly cookie. @param {{onSignedIn: () => void, client: any}} props */
function SignIn({ onSignedIn, client }) {
  const [error, setError] = useState(/** @type {unknown} */ (null));
  const [busy, setBusy] = useState(false);
  /** @param {SubmitEvent} event */
  const submit = async (event) => {
    event.preventDefault();
    const key = String(new FormData(/** @type {HTMLFormElement} */ (event.target)).get("key") ?? "").trim();
    setBusy(true);
    try {
      await client.signIn(key);
      onSignedIn();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <form class="card" onSubmit=${submit}>
      <h1>underway</h1>
      <p>Sign in with an API key (<code>underway keys create</code>).</p>
      <label for="key">API key</label>
      <input id="key" name="key" type="password" autocomplete="current-password" required
        placeholder="uw_…" autofocus />
      <${ErrorNote} error=${error} />
      <button class="primary" type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

/** The notices of changes: an aria-live region. */
function useToasts() {
  const [toasts, setToasts] = useState(/** @type {{id: number, message: string, kind: string}[]} */ ([]));
  const next = useRef(0);
  const toast = useCallback((/** @type {string} */ message, kind = "ok") => {
    const id = ++next.current;
    setToasts((shown) => [...shown.slice(-3), { id, message, kind }]);
    setTimeout(() => setToasts((shown) => shown.filter((t) => t.id !== id)), kind === "error" ? 8000 : 4000);
  }, []);
  const view = html`<div class="toasts" role="status" aria-live="polite">
    ${toasts.map((t) => html`<p key=${t.id} class=${`toast ${t.kind}`}>${t.message}</p>`)}
  </div>`;
  return { toast, view };
}

function Dashboard() {
  const [me, setMe] = useState(/** @type {any} */ (null));
  const [problem, setProblem] = useState(/** @type {unknown} */ (null));
  const csrf = useRef(/** @type {string|null} */ (null));
  const client = useMemo(
    () => createClient({ baseUrl: new URL(config.api, location.href).href, csrfToken: () => csrf.current }),
    [],
  );
  const { toast, view: toasts } = useToasts();
  const { path } = useLocation();

  const loadMe = useCallback(async () => {
    try {
      const found = await client.me();
      csrf.current = found.csrf_token;
      setMe(found);
      setProblem(null);
    } catch (error) {
      setMe(null);
      setProblem(error);
    }
  }, [client]);
  useEffect(() => {
    loadMe();
  }, [loadMe]);

  const signOut = useCallback(async () => {
    try {
      await client.signOut();
    } finally {
      csrf.current = null;
      setMe(null);
      setProblem({ status: 401 });
    }
  }, [client]);

  const app = useMemo(() => (me ? { client, me, toast, signOut } : null), [client, me, toast, signOut]);
  const { page: Page, id, section } = route(path);
  useEffect(() => {
    const title = PAGES.find((p) => p.path === section)?.title;
    document.title = id ? `${id} · underway` : title ? `${title} · underway` : "underway";
  }, [id, section]);

  if (app === null) {
    if (/** @type {any} */ (problem)?.status === 401) return html`<${SignIn} client=${client} onSignedIn=${loadMe} />`;
    if (problem) {
      return html`<main class="signin"><div class="card">
        <h1>underway</h1>
        <p class="alert" role="alert">The API at ${config.api} did not answer: ${messageOf(problem)}</p>
        <button type="button" onClick=${loadMe}>Try again</button>
      </div></main>`;
    }
    return html`<p class="loading">Loading…</p>`;
  }
  return html`<${AppContext.Provider} value=${app}>
    <a class="skip" href="#main">Skip to the content</a>
    <header class="top">
      <a class="brand" href=${href("/")}>underway</a>
      <nav aria-label="pages">
        ${PAGES.filter((p) => p.path !== "/submit" || me.can.write).map(
          (p) => html`<a href=${href(p.path)} aria-current=${p.path === section ? "page" : undefined}>${p.title}</a>`,
        )}
      </nav>
      <div class="who">
        ${me.auth
          ? html`<span title=${`signed in through ${me.via}`}>${me.owner}${me.role === "admin" ? " (admin)" : ""}</span>
              ${me.via === "session" ? html`<button type="button" class="link" onClick=${signOut}>Sign out</button>` : null}`
          : html`<span class="muted" title="authentication is off">local</span>`}
      </div>
    </header>
    <main id="main" tabindex="-1">
      <${Page} key=${`${section}/${id ?? ""}`} id=${id} />
    </main>
    ${toasts}
  <//>`;
}

followLinks();
render(html`<${Dashboard} />`, /** @type {HTMLElement} */ (document.getElementById("app")));
