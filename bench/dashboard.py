"""The dashboard's jobs page with 1,000 live jobs updating, in Chromium; and Bull Board's, same load.

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
* **connections**: requests the page made during the window, and the requests it held open at
  the end of it (underway: its one ``/api/stream``; Bull Board: none between polls);
* **rows changed**: a ``MutationObserver`` on the job list counts mutation records inside it
  (``row_mutations_per_s``) and, per observer callback, the distinct rows those records touched
  (``rows_changed_per_s``), to show the page is live and not frozen;
* **staleness** (after the window, 10 samples 0.5 s apart): for every job the page shows, now
  minus the time the shown progress was written (underway: the progress message is the
  ``time.time()`` of the call; Bull Board: the shown percentage is a step on a clock shared by
  all the jobs, see bench/peers/bullboard/jobs.mjs); median and max over all samples.

The page redraws at most every 250 ms by design (throttled), so ~4 redraws a second is the
expected rate whatever the event rate; the busy figure is what that costs.

**Peer** (``--peers bullboard``, the default when ``node`` and ``npm`` are on PATH and
bench/peers/bullboard has its ``node_modules`` or ``npm ci`` installs them): after underway's
measurement, in the same run, with underway's processes stopped, Bull Board (express adapter,
its defaults) for one BullMQ queue on the Redis at ``--redis`` (127.0.0.1:6379), and a BullMQ
``Worker`` of concurrency ``--jobs`` running ``--jobs`` jobs that each call
``job.updateProgress()`` every ``--every`` seconds (bench/peers/bullboard/server.mjs, jobs.mjs).
Queue and key prefix are new each run (``underway-bench-<random>:``); only that prefix's keys
are deleted at the end. Once 95 % of the jobs are active, the page opens Bull Board's list of
the queue's active jobs (``/ui/queue/<queue>?status=active``: 10 job cards a page, polled every
5 s, as shipped), waits for a job card, and the same figures are taken over the same window; its
job list is the ``<section>`` inside ``<main>`` that holds the job cards, a row one card (the
``div`` child of that section with the job's link). Chromium resolves no host but 127.0.0.1
(Bull Board's page asks for Google Fonts: it fails at once instead of waiting for DNS).

    .venv/bin/python bench/dashboard.py [--runs 3] [--jobs 1000] [--window 10] [--url]
        [--peers bullboard|none] [--redis 127.0.0.1:6379]
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import common, serving
from bench.pixels import CHROMIUM_ARGS, chromium_executable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

#: Bull Board's files (package.json, package-lock.json, server.mjs, jobs.mjs), next to this file.
BULLBOARD_DIR = Path(__file__).resolve().parent / "peers" / "bullboard"

#: No host but 127.0.0.1 resolves: a page's request to the internet fails at once.
BROWSER_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

#: Counts animation frames and mutations inside the job list (LIST), and per observer callback
#: the distinct rows (ROW) they touched; injected by the browser, not by the page.
COUNTERS = """
window.__frames = 0;
const tick = () => { window.__frames += 1; requestAnimationFrame(tick); };
requestAnimationFrame(tick);
window.__mutations = 0;
window.__rowChanges = 0;
new MutationObserver((records) => {
  const rows = new Set();
  for (const record of records) {
    const node = record.target.closest ? record.target : record.target.parentElement;
    if (!node || !node.closest(LIST)) continue;
    window.__mutations += 1;
    const row = node.closest(ROW);
    if (row) rows.add(row);
  }
  window.__rowChanges += rows.size;
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


def counters(list_selector: str, row_selector: str) -> str:
    return COUNTERS.replace("LIST", json.dumps(list_selector)).replace("ROW", json.dumps(row_selector))


#: Ages (s) of the progress underway's rows show: each message is the time.time() of its call.
UNDERWAY_AGES = """() => [...document.querySelectorAll("table#jobs tbody tr[data-job-id] .jobs-message")]
  .map((e) => Date.now() / 1000 - parseFloat(e.textContent)).filter((age) => Number.isFinite(age))"""

#: Ages (s) of the progress Bull Board's cards show: step k of the shared clock (jobs.mjs) is
#: written at t0 + k * every and shown as the percentage 100 * k / steps.
BULLBOARD_AGES = """([t0, every, steps]) => [...document.querySelectorAll("main section [role=progressbar]")]
  .map((e) => Math.round(parseFloat(e.getAttribute("aria-valuenow")) * steps / 100))
  .map((k) => Date.now() / 1000 - (t0 + k * every)).filter((age) => Number.isFinite(age))"""


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


def run_async(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end in a thread of its own: Playwright's sync API keeps an event
    loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def count_events(url: str) -> int:
    """Events stored so far: what the page's stream is sent (every job is one it follows)."""
    if common.is_postgres(url):
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM underway_events").fetchone()
    else:
        with sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def metrics(session: Any) -> dict[str, float]:
    return {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}


class Watched:
    """A page with the counters, its requests (all, and those in flight) and its errors."""

    def __init__(self, browser: Browser, list_selector: str, row_selector: str) -> None:
        self.context: BrowserContext = browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.add_init_script(counters(list_selector, row_selector))
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.in_flight: set[Any] = set()
        page = self.page
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on("request", self._started)
        page.on("requestfinished", lambda r: self.in_flight.discard(r))
        page.on("requestfailed", lambda r: self.in_flight.discard(r))

    def _started(self, request: Any) -> None:
        self.requests.append(request.url)
        self.in_flight.add(request)

    def measure(self, window: float, ages: Callable[[], list[float]], rows: str) -> dict[str, Any]:
        """Settle 2 s, then the window's figures; then 10 staleness samples 0.5 s apart."""
        page = self.page
        time.sleep(2.0)  # let the first snapshot and redraws settle before measuring
        session = self.context.new_cdp_session(page)
        session.send("Performance.enable")
        before, frames0 = metrics(session), page.evaluate("window.__frames")
        mutations0, changes0 = page.evaluate("[window.__mutations, window.__rowChanges]")
        requests0 = len(self.requests)
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        after, frames1 = metrics(session), page.evaluate("window.__frames")
        mutations1, changes1 = page.evaluate("[window.__mutations, window.__rowChanges]")
        window_requests = self.requests[requests0:]
        open_requests = sorted(r.url for r in self.in_flight)
        samples: list[float] = []
        for _ in range(10):
            samples += ages()
            time.sleep(0.5)

        def per_second(name: str) -> float:
            return (after[name] - before[name]) / elapsed * 1000

        return {
            "busy_ms_per_s": per_second("TaskDuration"),
            "script_ms_per_s": per_second("ScriptDuration"),
            "style_layout_ms_per_s": per_second("LayoutDuration") + per_second("RecalcStyleDuration"),
            "fps": (frames1 - frames0) / elapsed,
            "row_mutations_per_s": (mutations1 - mutations0) / elapsed,
            "rows_changed_per_s": (changes1 - changes0) / elapsed,
            "requests_in_window": len(window_requests),
            "window_requests": sorted(set(window_requests)),
            "open_streams": len(open_requests),
            "open_requests": open_requests,
            "external_requests": sorted({u for u in self.requests if not u.startswith("http://127.0.0.1")}),
            "rows": page.locator(rows).count(),
            "stale_median_s": common.median(samples),
            "stale_max_s": max(samples) if samples else float("nan"),
            "stale_samples": len(samples),
            "js_heap_mb": after.get("JSHeapUsedSize", 0) / 1e6,
            "problems": self.problems,
        }

    def close(self) -> None:
        self.context.close()


def underway_run(browser: Browser, args: Any) -> dict[str, Any]:
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
            run_async(serving.wait_ready(httpx.AsyncClient(base_url=base), [server, worker], logs, workers=1))
            calls = int((args.window + 60) / args.every)
            started = time.monotonic()
            run_async(submit_all(base, args.jobs, args.every, calls))
            result["submit_s"] = time.monotonic() - started
            result["running"] = wait_running(client, int(args.jobs * 0.95), [server, worker], logs)

            rows = "table#jobs tbody tr[data-job-id]"
            watched = Watched(browser, "table#jobs", "tr[data-job-id]")
            try:
                watched.page.goto(f"{base}/")
                watched.page.locator(rows).first.wait_for(timeout=30_000)
                events0, t0 = count_events(url), time.monotonic()
                result.update(
                    watched.measure(args.window, lambda: watched.page.evaluate(UNDERWAY_AGES), rows)
                )
                result["events_per_s"] = (count_events(url) - events0) / (time.monotonic() - t0)
                result["stream_requests_total"] = sum("/api/stream" in u for u in watched.requests)
            finally:
                watched.close()
            result["load_after"] = common.loadavg()
        finally:
            common.stop(worker)
            common.stop(server)
    return result


# -- Bull Board --------------------------------------------------------------------------------


def bullboard_setup(wanted: bool | None) -> tuple[bool, str]:
    """Whether Bull Board can run (installing its node_modules with ``npm ci`` if missing)."""
    if wanted is False:
        return False, "not asked for (--peers none)"
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        return False, f"{' and '.join(missing)} not on PATH"
    if not (BULLBOARD_DIR / "node_modules" / "@bull-board" / "express").exists():
        print(f"installing Bull Board: npm ci in {BULLBOARD_DIR}", flush=True)
        try:
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=BULLBOARD_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired:
            return False, "npm ci took more than 300 s"
        if done.returncode != 0:
            return False, f"npm ci failed: {done.stderr.strip()[-500:]}"
    return True, "ready"


def bullboard_versions() -> dict[str, str]:
    found = {"node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}
    for package in (
        "@bull-board/api",
        "@bull-board/express",
        "@bull-board/ui",
        "bullmq",
        "express",
        "ioredis",
    ):
        manifest = BULLBOARD_DIR / "node_modules" / package / "package.json"
        try:
            found[package] = json.loads(manifest.read_text(encoding="utf-8"))["version"]
        except (OSError, ValueError, KeyError):
            found[package] = "?"
    return found


def bullboard_active(client: httpx.Client, queue: str) -> int:
    params = {"activeQueue": queue, "status": "active", "page": "1", "jobsPerPage": "1"}
    answer = client.get("/ui/api/queues", params=params)
    answer.raise_for_status()
    return int(next(q for q in answer.json()["queues"] if q["name"] == queue)["counts"]["active"])


def bullboard_clean(prefix: str, redis: str) -> str:
    """Delete the keys under this run's prefix (and nothing else)."""
    try:
        done = subprocess.run(
            ["node", str(BULLBOARD_DIR / "jobs.mjs"), "--clean", "--prefix", prefix, "--redis", redis],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return f"cleaning {prefix}: timed out"
    return (done.stdout + done.stderr).strip()


def bullboard_run(browser: Browser, args: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"load_before": common.loadavg()}
    tag = secrets.token_hex(5)
    queue, prefix = f"bench-{tag}", f"underway-bench-{tag}"
    with common.workdir("dashboard-bullboard", args.keep) as tmp, ExitStack() as stack:
        port = serving.free_port()
        logs = [tmp / "server.log", tmp / "jobs.log"]
        seconds = args.window + 60
        t0 = time.time()
        where = ["--queue", queue, "--prefix", prefix, "--redis", args.redis]
        server = common.start(
            ["node", str(BULLBOARD_DIR / "server.mjs"), "--port", str(port), *where], logs[0]
        )
        load = ["--jobs", str(args.jobs), "--every", str(args.every), "--seconds", str(seconds)]
        jobs = common.start(
            ["node", str(BULLBOARD_DIR / "jobs.mjs"), *where, *load, "--t0", f"{t0:.6f}"], logs[1]
        )
        base = f"http://127.0.0.1:{port}"
        client = stack.enter_context(httpx.Client(base_url=base, timeout=30))
        try:
            started = time.monotonic()
            deadline = started + 120
            wanted, active = int(args.jobs * 0.95), -1
            while active < wanted:
                common.check_alive([server, jobs], logs)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {active} of {wanted} BullMQ jobs active after 120 s")
                try:
                    active = bullboard_active(client, queue)
                except (httpx.HTTPError, StopIteration, KeyError):
                    pass
                time.sleep(0.2)
            result["ready_s"], result["running"] = time.monotonic() - started, active
            result["redis"] = next(
                (ln.split()[1] for ln in logs[1].read_text().splitlines() if ln.startswith("redis ")), "?"
            )

            rows = f"main section > div:has(a[href*='/queue/{queue}/'])"
            watched = Watched(browser, "main section", rows)
            steps = int(seconds / args.every + 0.999999)
            try:
                watched.page.goto(f"{base}/ui/queue/{queue}?status=active")
                watched.page.locator(rows).first.wait_for(timeout=30_000)
                result.update(
                    watched.measure(
                        args.window,
                        lambda: watched.page.evaluate(BULLBOARD_AGES, [t0, args.every, steps]),
                        rows,
                    )
                )
            finally:
                watched.close()
            result["load_after"] = common.loadavg()
        finally:
            common.stop(jobs)
            common.stop(server)
            said = [ln for ln in logs[1].read_text().splitlines() if ln.startswith("deleted ")]
            result["cleaned"] = "; ".join([*said[-1:], bullboard_clean(prefix, args.redis) + " (after)"])
    return result


# -- report ------------------------------------------------------------------------------------

#: figure, format, whether a ratio underway / peer means something.
FIGURES = [
    ("busy_ms_per_s", "{:.1f}", True),
    ("script_ms_per_s", "{:.1f}", True),
    ("style_layout_ms_per_s", "{:.1f}", True),
    ("fps", "{:.1f}", True),
    ("rows_changed_per_s", "{:.1f}", True),
    ("row_mutations_per_s", "{:.1f}", True),
    ("requests_in_window", "{:.0f}", False),
    ("open_streams", "{:.0f}", False),
    ("rows", "{:.0f}", False),
    ("stale_median_s", "{:.2f}", True),
    ("stale_max_s", "{:.2f}", True),
    ("js_heap_mb", "{:.1f}", True),
]


def describe(name: str, run: dict[str, Any]) -> str:
    extra = f"{run['events_per_s']:.0f} events/s; " if "events_per_s" in run else ""
    return (
        f"  {name}: {extra}busy {run['busy_ms_per_s']:.0f} ms/s (script {run['script_ms_per_s']:.0f},"
        f" style+layout {run['style_layout_ms_per_s']:.0f}), {run['fps']:.0f} fps,"
        f" {run['rows_changed_per_s']:.1f} rows changed/s ({run['row_mutations_per_s']:.0f} mutations/s),"
        f" {run['requests_in_window']} requests in the window, {run['open_streams']} open stream(s),"
        f" {run['rows']} rows, stale {run['stale_median_s']:.2f} s median / {run['stale_max_s']:.2f} s max,"
        f" heap {run['js_heap_mb']:.1f} MB, load {run['load_before']} -> {run['load_after']},"
        f" problems {run['problems']}"
    )


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def report(runs: list[dict[str, Any]], peers: list[str]) -> None:
    headers = ["figure", "underway"]
    for peer in peers:
        headers += [peer, f"underway/{peer}"]
    lines = []
    for key, fmt, meaningful in FIGURES:
        line = [key, common.spread([r["underway"][key] for r in runs], fmt)]
        for peer in peers:
            theirs = [r[peer][key] for r in runs if peer in r]
            line.append(common.spread(theirs, fmt))
            ratios = [
                x for r in runs if peer in r and (x := ratio(r["underway"][key], r[peer][key])) is not None
            ]
            of_medians = ratio(common.median([r["underway"][key] for r in runs]), common.median(theirs))
            if meaningful and ratios and of_medians is not None:
                line.append(f"{of_medians:.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
            else:
                line.append("-")
        lines.append(line)
    print("\nmedian (min-max) of the runs; ratio: of the medians (range of the runs' ratios)")
    common.table(headers, lines)


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0], default_runs=3)
    p.add_argument("--jobs", type=int, default=1000, help="live jobs (default 1000)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between a job's progress calls")
    p.add_argument("--window", type=float, default=10.0, help="seconds measured (default 10)")
    p.add_argument(
        "--peers",
        default=None,
        help="peer dashboards measured in the same runs: bullboard, or none (default: bullboard when"
        " node and npm are on PATH and its node_modules are there or npm ci installs them)",
    )
    p.add_argument(
        "--redis", default="127.0.0.1:6379", help="Redis host:port for BullMQ (default %(default)s)"
    )
    common.add_url_option(p)
    args = p.parse_args()
    asked = {name for name in (args.peers or "").split(",") if name and name != "none"}
    if asked - {"bullboard"}:
        p.error(f"unknown peer(s): {', '.join(sorted(asked - {'bullboard'}))} (known: bullboard)")
    common.install_cleanup()
    serving.raise_nofile()
    from playwright.sync_api import sync_playwright

    wanted = None if args.peers is None else "bullboard" in asked
    ok, why = bullboard_setup(wanted)
    peers = ["bullboard"] if ok else []
    if not ok:
        print(f"peer bullboard: skipped: {why}")
        if wanted:
            raise SystemExit(f"--peers bullboard asked for, but {why}")
    info = common.machine()
    extra: dict[str, Any] = {"playwright": version("playwright"), "jobs": args.jobs, "every_s": args.every}
    if peers:
        info["bullboard"] = bullboard_versions()
        extra["bullboard"] = " ".join(f"{k}={v}" for k, v in info["bullboard"].items())
    else:
        info["bullboard"] = f"skipped: {why}"
    common.print_machine(info, extra)
    runs: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=BROWSER_ARGS)
        for n in range(args.runs):
            run: dict[str, Any] = {"underway": underway_run(browser, args)}
            print(f"run {n + 1}:\n{describe('underway', run['underway'])}", flush=True)
            if "bullboard" in peers:
                run["bullboard"] = bullboard_run(browser, args)
                print(describe("bullboard", run["bullboard"]), flush=True)
                print(f"  redis {run['bullboard']['redis']}; {run['bullboard']['cleaned']}", flush=True)
            runs.append(run)
        browser.close()
    report(runs, peers)
    common.write_json(args.json, {"machine": info, "args": vars(args), "peers": peers, "runs": runs})


if __name__ == "__main__":
    main()
