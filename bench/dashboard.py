"""The dashboard's jobs page with 1,000 live jobs updating, in Chromium.

Each run, on a fresh SQLite file (``--url``: a new PostgreSQL schema): ``underway server``
(which serves the dashboard at ``/``) and one ``underway worker --concurrency 1000``
subprocess; ``--jobs`` (1,000) ``progress_clock`` jobs (bench/apps.py) submitted one request
each, as users submit them, each calling ``ctx.progress`` every ``--every`` (1 s) for the whole
run: about 1,000 progress events a second, all of them jobs the page follows. Once they all
run, one headless Chromium page (Debian's, through Playwright with ``executable_path``) opens
the jobs page (``/``) as a user does, under the dashboard's own Content-Security-Policy, and
waits for its table. Then, over ``--window`` seconds (10):

* **main-thread busy time per second**: Chromium's own ``TaskDuration`` (CDP
  ``Performance.getMetrics``: the time the renderer's main thread spent running tasks: script,
  style, layout, paint), its difference over the window divided by the window; also
  ``ScriptDuration`` and ``LayoutDuration + RecalcStyleDuration``;
* **frames per second**: ``requestAnimationFrame`` callbacks counted by an init script (the
  page's own scripts are unchanged);
* **connections**: requests the page made to the API during the window, and the streams it held
  open (requests to ``/api/stream`` started and not finished) — target: one;
* **rows updated**: how many times the table's rows changed (a ``MutationObserver`` on the
  table, counting records), to show the page is live and not frozen.

The page redraws at most every 250 ms by design (throttled), so ~4 redraws a second is the
expected rate whatever the event rate; the busy figure is what that costs.

    .venv/bin/python bench/dashboard.py [--runs 3] [--jobs 1000] [--window 10] [--url]
"""

from __future__ import annotations

import asyncio
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
    from playwright.sync_api import Browser

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

#: Counts animation frames and table mutations; injected by the browser, not by the page.
COUNTERS = """
window.__frames = 0;
const tick = () => { window.__frames += 1; requestAnimationFrame(tick); };
requestAnimationFrame(tick);
window.__mutations = 0;
new MutationObserver((records) => {
  for (const record of records) {
    const inTable = record.target.closest ? record.target.closest("table#jobs")
      : record.target.parentElement?.closest("table#jobs");
    if (inTable) window.__mutations += 1;
  }
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


def chromium_executable() -> str:
    found = shutil.which("chromium") or "/usr/lib/chromium/chromium"
    if not Path(found).exists():
        raise SystemExit("Chromium is not installed: run scripts/install-chromium")
    return found


async def submit_all(base: str, jobs: int, every: float, calls: int) -> list[str]:
    """``jobs`` jobs, one ``POST /api/jobs`` each, 50 at a time."""
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        gate = asyncio.Semaphore(50)

        async def one(n: int) -> str:
            async with gate:
                job = await serving.submit(client, "progress_clock", calls=calls, every=every, lead=0.0)
                return str(job["id"])

        return list(await asyncio.gather(*(one(n) for n in range(jobs))))


def wait_running(client: httpx.Client, wanted: int, procs: list[Any], logs: list[Path]) -> int:
    deadline = time.monotonic() + 120
    while True:
        common.check_alive(procs, logs)
        running = client.get("/api/stats", params={"window": "15m"}).json()["depth"]["running"]
        if running >= wanted:
            return int(running)
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {running} of {wanted} jobs running after 120 s")
        time.sleep(0.2)


def metrics(session: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}


def one_run(browser: Browser, args: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"load_before": common.loadavg()}
    with common.workdir("dashboard", args.keep) as tmp, ExitStack() as stack:
        url = stack.enter_context(common.postgres_schema(args.url, args.keep)) if args.url else None
        url = url or common.sqlite_url(tmp / "b.db")
        port = serving.free_port()
        logs = [tmp / "server.log", tmp / "worker.log"]
        server = serving.start_server(url, port, logs[0])
        worker = serving.start_worker(url, logs[1], concurrency=args.jobs)
        base = f"http://127.0.0.1:{port}"
        client = stack.enter_context(httpx.Client(base_url=base, timeout=30))
        try:
            asyncio.run(
                serving.wait_ready(httpx.AsyncClient(base_url=base), [server, worker], logs, workers=1)
            )
            calls = int((args.window + 60) / args.every)
            started = time.monotonic()
            asyncio.run(submit_all(base, args.jobs, args.every, calls))
            result["submit_s"] = time.monotonic() - started
            result["running"] = wait_running(client, int(args.jobs * 0.95), [server, worker], logs)

            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(COUNTERS)
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            requests: list[str] = []
            open_streams: set[Any] = set()
            page.on("request", lambda r: requests.append(r.url))
            page.on("request", lambda r: open_streams.add(r) if "/api/stream" in r.url else None)
            page.on("requestfinished", lambda r: open_streams.discard(r))
            page.on("requestfailed", lambda r: open_streams.discard(r))
            page.goto(f"{base}/")
            page.locator("table#jobs tbody tr[data-job-id]").first.wait_for(timeout=30_000)
            time.sleep(2.0)  # let the first snapshot and redraws settle before measuring
            session = context.new_cdp_session(page)
            session.send("Performance.enable")
            before, frames0 = metrics(session), page.evaluate("window.__frames")
            mutations0, requests0 = page.evaluate("window.__mutations"), len(requests)
            t0 = time.monotonic()
            time.sleep(args.window)
            elapsed = time.monotonic() - t0
            after, frames1 = metrics(session), page.evaluate("window.__frames")
            mutations1 = page.evaluate("window.__mutations")
            window_requests = requests[requests0:]

            def per_second(name: str) -> float:
                return (after[name] - before[name]) / elapsed * 1000

            result.update(
                busy_ms_per_s=per_second("TaskDuration"),
                script_ms_per_s=per_second("ScriptDuration"),
                style_layout_ms_per_s=per_second("LayoutDuration") + per_second("RecalcStyleDuration"),
                fps=(frames1 - frames0) / elapsed,
                row_mutations_per_s=(mutations1 - mutations0) / elapsed,
                requests_in_window=len(window_requests),
                open_streams=len(open_streams),
                stream_requests_total=sum("/api/stream" in u for u in requests),
                rows=page.locator("table#jobs tbody tr[data-job-id]").count(),
                js_heap_mb=after.get("JSHeapUsedSize", 0) / 1e6,
                problems=problems,
                load_after=common.loadavg(),
            )
            context.close()
        finally:
            common.stop(worker)
            common.stop(server)
    return result


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0], default_runs=3)
    p.add_argument("--jobs", type=int, default=1000, help="live jobs (default 1000)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between a job's progress calls")
    p.add_argument("--window", type=float, default=10.0, help="seconds measured (default 10)")
    common.add_url_option(p)
    args = p.parse_args()
    common.install_cleanup()
    serving.raise_nofile()
    from playwright.sync_api import sync_playwright

    info = common.machine()
    common.print_machine(
        info, {"playwright": version("playwright"), "jobs": args.jobs, "every_s": args.every}
    )
    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        for n in range(args.runs):
            run = one_run(browser, args)
            runs.append(run)
            print(
                f"run {n + 1}: busy {run['busy_ms_per_s']:.0f} ms/s (script {run['script_ms_per_s']:.0f},"
                f" style+layout {run['style_layout_ms_per_s']:.0f}), {run['fps']:.0f} fps,"
                f" {run['row_mutations_per_s']:.0f} row changes/s, {run['requests_in_window']} requests"
                f" in the window, {run['open_streams']} open stream(s), {run['rows']} rows,"
                f" heap {run['js_heap_mb']:.1f} MB, problems {run['problems']}"
            )
        browser.close()
    keys = (
        "busy_ms_per_s",
        "script_ms_per_s",
        "style_layout_ms_per_s",
        "fps",
        "row_mutations_per_s",
        "requests_in_window",
        "open_streams",
        "js_heap_mb",
    )
    common.table(
        ["figure", "median", "min-max"],
        [
            [
                key,
                f"{common.median([r[key] for r in runs]):.1f}",
                common.spread([r[key] for r in runs], "{:.1f}"),
            ]
            for key in keys
        ],
    )
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()
