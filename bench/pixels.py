"""Progress to pixels in Chromium: <underway-job> against a page polling the job every 1.5 s.

Each run, on a fresh SQLite file (``--url``: a new PostgreSQL schema): a server subprocess (this
file with ``--serve``: ``underway.web.create_app`` over ``bench.apps:app``, plus the pages
below), an ``underway worker`` subprocess, and one headless Chromium (Debian's, through
Playwright with ``executable_path``, as the browser tests drive it; ``scripts/install-chromium``)
for all runs. One ``progress_clock`` job (bench/apps.py) calls ``ctx.progress(i, N,
message=f"{time.time():.6f}")`` every 200 ms (``--every``), ``N`` = ``--events`` (100): slower
than ``progress_interval`` (50 ms), so every call is written at once, on the throttle's leading
edge, never coalesced. Pages watch that same job at once, each in its own browser context, all
under ``Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'``:

* ``element sse`` (and, with ``--transports sse,ws,poll``, ``element ws`` / ``element poll``):
  ``<underway-job transport=…>`` from ``/assets/underway-elements.js``
  (``--underway-bar-transition: none``, so the frame after a change draws the new width). Pages
  that get the same event at the same moment compete for the CPUs: compare transports in one
  run, but take one page's figures from a run with that page alone;
* ``polling 1.5s``: the pattern the element replaces, ``fetch(GET /api/jobs/{id})`` every 1.5 s
  (``setInterval``) setting a plain bar's ``aria-valuenow`` and width.

On each page a ``MutationObserver`` on the bar's ``aria-valuenow`` takes ``performance.timeOrigin
+ performance.now()`` when the value changes (``dom``), when the frame that draws it runs its
``requestAnimationFrame`` callbacks (``frame``) and in a task posted from there (``painted``:
after that frame's rendering). underway.js calls back inside ``requestAnimationFrame`` (at most
once per frame): a change made there is drawn by that same frame, which the page's wrapper of
``requestAnimationFrame`` notices (``takeRecords()`` right after each callback). With ``total =
N``, ``aria-valuenow`` is the call's number. For every call ``i`` (its ``time.time()`` read back
from the job's stored progress events), the latency is the first time a page showed ``i`` or
more, minus the call's time: the element draws every value; the polling page shows a call at
its next poll. Same machine, same clock (the script checks the page's clock against
``time.time()`` and prints the offset).

Target: ``painted`` p99 <= 50 ms on loopback for ``element sse``. Reports p50/p90/p99/mean per
run, the medians of the runs (min-max), and the ratio polling / element.

    .venv/bin/python bench/pixels.py [--runs 5] [--events 100] [--transports sse] [--url]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import common, serving

if TYPE_CHECKING:
    from fastapi import FastAPI
    from playwright.sync_api import Browser, Page

#: Seconds between progress calls: every call is a leading edge (progress_interval is 0.05 s).
EVERY = 0.2
#: The polling page's period, as the dashboards it stands for (Hatchet's and RQ's are 1.5-5 s).
POLL_INTERVAL = 1.5
#: Seconds the job waits before its first call, while the pages connect.
LEAD = 4.0
TARGET_P99_MS = 50.0
TRANSPORTS = ("sse", "ws", "poll")
DEFAULT_TRANSPORTS = "sse"
POLLING = "polling 1.5s"

PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pixels</title>
<script type="module" src="/bench/{script}"></script></head>
<body><main id="app"></main></body></html>
"""

#: Shared by both pages: record when the bar shows a new value (see the module docstring).
#: underway.js hands callbacks over in requestAnimationFrame: a change made inside a frame's
#: callbacks is drawn by that frame, so the wrapper below looks for changes right after each
#: callback (takeRecords) and takes them as "in frame"; other changes wait for the next frame.
MEASURE_JS = """
const clock = () => performance.timeOrigin + performance.now();
window.__shown = [];
window.__clock = clock;
const bars = [];
const nextFrame = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (callback) => nextFrame((time) => {
  try {
    callback(time);
  } finally {
    for (const bar of bars) bar.check(true);
  }
});
function afterPaint(shown) {
  const channel = new MessageChannel();
  channel.port1.onmessage = () => { shown.painted = clock(); };
  channel.port2.postMessage(null);
}
function measure(bar) {
  let last = null;
  const seen = (inFrame) => {
    const value = bar.getAttribute("aria-valuenow");
    if (value === null || value === last) return;
    last = value;
    const shown = { value: Number(value), dom: clock(), inFrame };
    window.__shown.push(shown);
    if (inFrame) {
      shown.frame = shown.dom;
      afterPaint(shown);
    } else {
      nextFrame(() => { shown.frame = clock(); afterPaint(shown); });
    }
  };
  const observer = new MutationObserver(() => seen(false));
  observer.observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
  bars.push({ check: (inFrame) => { if (observer.takeRecords().length) seen(inFrame); } });
}
const params = new URLSearchParams(location.search);
"""

ELEMENT_JS = (
    'import "/assets/underway-elements.js";\n'
    + MEASURE_JS
    + """
const sheet = new CSSStyleSheet();
sheet.replaceSync("underway-job { --underway-bar-transition: none; width: 40rem; }");
document.adoptedStyleSheets = [sheet];
const element = document.createElement("underway-job");
element.setAttribute("transport", params.get("transport"));
element.setAttribute("job-id", params.get("id"));
document.getElementById("app").append(element);
await customElements.whenDefined("underway-job");
measure(element.shadowRoot.querySelector("[part~=bar]"));
window.__ready = () => element.hasAttribute("connected") || element.hasAttribute("status");
"""
)

POLLING_JS = (
    MEASURE_JS
    + """
const sheet = new CSSStyleSheet();
sheet.replaceSync(".bar { width: 40rem; height: 0.5rem; background: #e5e7eb; }"
  + " .fill { height: 100%; width: 0; background: #2563eb; }");
document.adoptedStyleSheets = [sheet];
const bar = document.createElement("div");
bar.className = "bar";
bar.setAttribute("role", "progressbar");
const fill = document.createElement("div");
fill.className = "fill";
bar.append(fill);
document.getElementById("app").append(bar);
measure(bar);
const timer = setInterval(async () => {
  const response = await fetch(`/api/jobs/${params.get("id")}`);
  const job = await response.json();
  const percent = job.progress && job.progress.percent;
  if (typeof percent === "number") {
    bar.setAttribute("aria-valuenow", String(percent));
    fill.style.width = `${percent}%`;
  }
  if (["succeeded", "failed", "cancelled"].includes(job.status)) clearInterval(timer);
}, %POLL_MS%);
window.__ready = () => true;
""".replace("%POLL_MS%", str(int(POLL_INTERVAL * 1000)))
)


# -- the server (``--serve``, a subprocess) ------------------------------------------------------


def add_pages(web: FastAPI) -> None:
    """``/bench/element.html``, ``/bench/polling.html`` and their scripts; ``/assets`` if the
    server has none yet."""
    from fastapi.responses import HTMLResponse, Response

    if not any(getattr(route, "path", None) == "/assets" for route in web.routes):
        from starlette.staticfiles import StaticFiles

        static = common.ROOT / "underway" / "web" / "static"
        web.mount("/assets", StaticFiles(directory=static), name="assets")
    headers = {"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"}
    scripts = {"element.js": ELEMENT_JS, "polling.js": POLLING_JS}

    @web.get("/bench/{name}.html", include_in_schema=False)
    async def page(name: str) -> HTMLResponse:
        return HTMLResponse(PAGE.format(script=f"{name}.js"), headers=headers)

    @web.get("/bench/{name}.js", include_in_schema=False)
    async def script(name: str) -> Response:
        return Response(scripts[f"{name}.js"], media_type="text/javascript", headers=headers)

    @web.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)


def serve(port: int) -> None:
    """The server subprocess: the API of ``bench.apps:app`` (store: ``UNDERWAY_URL``) and the pages."""
    from bench.apps import app
    from underway.web import create_app
    from underway.web.server import serve as run_server

    app.settings = app.settings.replace(host="127.0.0.1", port=port)
    web = create_app(app, settings=app.settings)
    add_pages(web)
    asyncio.run(run_server(web, app.settings))


# -- the browser ---------------------------------------------------------------------------------


def chromium_executable() -> str:
    found = shutil.which("chromium") or "/usr/lib/chromium/chromium"
    if not Path(found).exists():
        raise SystemExit("Chromium is not installed: run scripts/install-chromium")
    return found


def open_page(browser: Browser, url: str, problems: list[str]) -> Page:
    """A page in its own context; console errors and uncaught errors go to ``problems``."""
    page = browser.new_context().new_page()
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.goto(url)
    deadline = time.monotonic() + 15
    # Not page.wait_for_function(): its polling evaluates a string, which the page's CSP refuses.
    while not page.evaluate("Boolean(window.__ready && window.__ready())"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not get ready: {problems}")
        time.sleep(0.02)
    return page


def clock_offset_ms(page: Page) -> float:
    """The page's clock minus ``time.time()``, in ms (the middle of a round trip, best of 20)."""
    best: tuple[float, float] | None = None
    for _ in range(20):
        before = time.time()
        theirs = float(page.evaluate("window.__clock()")) / 1000
        after = time.time()
        if best is None or after - before < best[0]:
            best = (after - before, theirs - (before + after) / 2)
    assert best is not None
    return best[1] * 1000


# -- one run -------------------------------------------------------------------------------------


def wait_ready(client: httpx.Client, procs: list[Any], logs: list[Path], timeout: float = 60.0) -> None:
    """Until the server answers and the worker is registered."""
    deadline = time.monotonic() + timeout
    while True:
        common.check_alive(procs, logs)
        try:
            if client.get("/api/healthz").status_code == 200 and client.get("/api/workers").json()["workers"]:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server and worker were not ready within {timeout:.0f} s")
        time.sleep(0.05)


def latencies(
    calls: list[tuple[int, float]], total: int, shown: list[dict[str, Any]], key: str
) -> list[float]:
    """Seconds from each call to the first time the page showed its value or a later one
    (``shown`` holds percentages, ``aria-valuenow``, of ``total``)."""
    records = sorted((r for r in shown if key in r), key=lambda r: r[key])
    found = []
    for number, called in calls:
        at = next((r[key] / 1000 for r in records if round(r["value"] * total / 100) >= number), None)
        if at is not None:
            found.append(at - called)
    return found


def figures(calls: list[tuple[int, float]], total: int, shown: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {"calls": len(calls), "values_drawn": len(shown)}
    for key in ("dom", "frame", "painted"):
        values = latencies(calls, total, shown, key)
        result[f"{key}_n"] = len(values)
        for p in (50, 90, 99):
            result[f"{key}_p{p}_ms"] = common.percentile(values, p) * 1000
        result[f"{key}_mean_ms"] = sum(values) / len(values) * 1000 if values else float("nan")
        result[f"{key}_max_ms"] = max(values) * 1000 if values else float("nan")
        if key == "painted":
            result["samples_ms"] = [round(v * 1000, 3) for v in values]
    return result


def stored_calls(client: httpx.Client, job_id: str) -> list[tuple[int, float]]:
    """(call number, time of the call) of every stored progress event of the job."""
    response = client.get(
        f"/api/jobs/{job_id}/events", params={"after": 0, "types": "progress", "limit": 10_000}
    )
    response.raise_for_status()
    events = response.json()["events"]
    return [(int(e["data"]["current"]), float(e["data"]["message"])) for e in events]


def one_run(browser: Browser, args: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"load": common.loadavg()}
    with common.workdir("pixels", args.keep) as tmp, ExitStack() as stack:
        url = stack.enter_context(common.postgres_schema(args.url, args.keep)) if args.url else None
        url = url or common.sqlite_url(tmp / "b.db")
        port = serving.free_port()
        logs = [tmp / "server.log", tmp / "worker.log"]
        server = common.start(
            [sys.executable, __file__, "--serve", str(port)], logs[0], {"UNDERWAY_URL": url}
        )
        worker = serving.start_worker(url, logs[1])
        client = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        problems: list[str] = []
        try:
            wait_ready(client, [server, worker], logs)
            job = client.post(
                "/api/jobs",
                json={
                    "task": "progress_clock",
                    "args": {"calls": args.events, "every": args.every, "lead": LEAD},
                },
            ).json()
            base = f"http://127.0.0.1:{port}/bench"
            pages = {
                f"element {t}": f"{base}/element.html?transport={t}&id={job['id']}" for t in args.transports
            }
            pages[POLLING] = f"{base}/polling.html?id={job['id']}"
            opened = {name: open_page(browser, address, problems) for name, address in pages.items()}
            started = time.time()
            result["clock_offset_ms"] = clock_offset_ms(next(iter(opened.values())))
            if time.time() - started > LEAD:
                problems.append(
                    "the pages took longer than the job's lead to open: the first calls were missed"
                )
            deadline = time.monotonic() + LEAD + args.events * args.every * 3 + 30
            while client.get(f"/api/jobs/{job['id']}").json()["status"] != "succeeded":
                if time.monotonic() > deadline:
                    raise TimeoutError("the progress_clock job did not finish")
                common.check_alive([server, worker], logs)
                time.sleep(0.2)
            time.sleep(POLL_INTERVAL + 0.5)  # the last poll, and the last frames
            calls = stored_calls(client, job["id"])
            result["written"] = len(calls)
            for name, page in opened.items():
                result[name] = figures(calls, args.events, page.evaluate("window.__shown"))
                page.context.close()
            result["problems"] = problems + serving.server_errors(logs[0])
        finally:
            common.stop(worker)
            common.stop(server)
    return result


# -- report --------------------------------------------------------------------------------------


def report(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    rows = []
    for number, result in enumerate(runs, 1):
        for name in variants:
            r = result[name]
            rows.append(
                [
                    number,
                    name,
                    result["load"],
                    f"{r['painted_n']}/{r['calls']}",
                    f"{r['dom_p50_ms']:.1f}/{r['dom_p99_ms']:.1f}",
                    f"{r['frame_p50_ms']:.1f}/{r['frame_p99_ms']:.1f}",
                    f"{r['painted_p50_ms']:.1f}",
                    f"{r['painted_p90_ms']:.1f}",
                    f"{r['painted_p99_ms']:.1f}",
                    f"{r['painted_mean_ms']:.1f}",
                    f"{r['painted_max_ms']:.1f}",
                ]
            )
    common.table(
        [
            "run",
            "page",
            "load 1/5/15",
            "calls seen",
            "dom p50/p99",
            "frame p50/p99",
            "painted p50",
            "p90",
            "p99",
            "mean",
            "max ms",
        ],
        rows,
    )
    summary: dict[str, Any] = {}
    print(f"\nmedian of {len(runs)} runs (min-max), latency call -> painted:")
    for name in variants:
        keys = ("painted_p50_ms", "painted_p99_ms", "painted_mean_ms", "frame_p99_ms", "dom_p99_ms")
        figures_: dict[str, Any] = {key: [r[name][key] for r in runs] for key in keys}
        pooled = [v for r in runs for v in r[name]["samples_ms"]]
        figures_["pooled"] = {
            "n": len(pooled),
            "p50_ms": common.percentile(pooled, 50),
            "p99_ms": common.percentile(pooled, 99),
        }
        summary[name] = figures_
        target = ""
        if name.startswith("element"):
            met = "met" if common.median(figures_["painted_p99_ms"]) <= TARGET_P99_MS else "NOT met"
            target = f"  (target p99 <= {TARGET_P99_MS:.0f} ms: {met})"
        print(
            f"  {name:<13} p50 {common.spread(figures_['painted_p50_ms'], '{:.1f}')}"
            f"  p99 {common.spread(figures_['painted_p99_ms'], '{:.1f}')}"
            f"  mean {common.spread(figures_['painted_mean_ms'], '{:.1f}')} ms"
            f"  | pooled n={len(pooled)} p50 {figures_['pooled']['p50_ms']:.1f}"
            f" p99 {figures_['pooled']['p99_ms']:.1f}{target}"
        )
    for name in variants:
        if name.startswith("element"):
            ratio = [r[POLLING]["painted_mean_ms"] / r[name]["painted_mean_ms"] for r in runs]
            ratio50 = [r[POLLING]["painted_p50_ms"] / r[name]["painted_p50_ms"] for r in runs]
            summary[name]["ratio_mean"] = ratio
            print(
                f"  {POLLING} / {name}: mean {common.spread(ratio, '{:.0f}')}x,"
                f" p50 {common.spread(ratio50, '{:.0f}')}x (per run)"
            )
    return summary


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
        return
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100, help="progress calls per run")
    p.add_argument(
        "--every", type=float, default=EVERY, help=f"seconds between progress calls (default {EVERY})"
    )
    p.add_argument(
        "--transports",
        default=DEFAULT_TRANSPORTS,
        help=f"the element's transports, a page each: {', '.join(TRANSPORTS)} (default {DEFAULT_TRANSPORTS})",
    )
    common.add_url_option(p)
    args = p.parse_args()
    args.transports = [t for t in args.transports.split(",") if t]
    if not args.transports or set(args.transports) - set(TRANSPORTS):
        p.error(f"--transports takes some of {', '.join(TRANSPORTS)}")
    if args.url is not None and not common.is_postgres(args.url):
        p.error("--url takes a postgresql:// URL (SQLite is the default)")
    common.install_cleanup()
    from playwright.sync_api import sync_playwright

    info = common.machine()
    executable = chromium_executable()
    variants = [f"element {t}" for t in args.transports] + [POLLING]
    runs: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        extra = {
            "benchmark": f"ctx.progress() every {args.every * 1000:g} ms in a worker subprocess ->"
            f" pixels in headless Chromium; {args.events} calls per run, {args.runs} runs;"
            f" pages: {', '.join(variants)}",
            "browser": f"Chromium {browser.version} ({executable}), playwright {version('playwright')}",
        }
        if args.url:
            extra["postgres"] = str(common.postgres_facts(args.url))
        common.print_machine(info, extra)
        try:
            for number in range(args.runs):
                result = one_run(browser, args)
                runs.append(result)
                line = ", ".join(
                    f"{name} p50 {r['painted_p50_ms']:.1f} p99 {r['painted_p99_ms']:.1f}"
                    for name, r in ((name, result[name]) for name in variants)
                )
                print(
                    f"run {number + 1}: {line} ms (clock offset {result['clock_offset_ms']:+.2f} ms,"
                    f" load {result['load']})",
                    flush=True,
                )
                for problem in result["problems"]:
                    print(f"  problem: {problem}")
        finally:
            browser.close()
            common.stop_all()
    if not runs:
        return
    print()
    summary = report(runs, variants)
    for result in runs:
        for name in variants:
            del result[name]["samples_ms"]
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
