"""Submit-to-finish latency of one no-op job at a time, the worker in another process.

Each run, on a fresh SQLite file per variant: one ``underway worker --concurrency 10``
subprocess; the benchmark process does ``job = await noop.submit()`` then
``await app.wait(job.id)``, 50 times to warm up and then 500 times, timed. Variants:

* ``default``: as shipped (poll_interval 1 ms; on Linux, inotify on ``<db>-lock``, which
  writers touch after each commit, wakes waiters and the ``PRAGMA data_version`` poll is only a
  100 ms safety net);
* ``poll 5ms``: ``UNDERWAY_POLL_INTERVAL=5ms`` in both processes;
* ``no inotify``: inotify disabled in both processes, so changes by the other process are
  found by polling ``PRAGMA data_version`` every 1 ms (what happens where inotify is missing).

Each latency is split with the job's own timestamps (same host clock): queued (created to
claimed), run (claimed to recorded finished) and seen (recorded finished to ``wait`` returning).
Afterwards the idle CPU use (user + system, from /proc/<pid>/stat) of each variant's worker is
measured over the same ``--idle`` seconds (default 10) with nothing to do.

    .venv/bin/python bench/latency.py [--runs 5] [--jobs 500] [--idle 10]

With ``--url [postgresql://...]`` the worker and the benchmark share a PostgreSQL database
instead (a new schema per run and variant): one variant, ``postgres``, where the worker and the
waiter learn of each other's commits by ``LISTEN``/``NOTIFY``.

    .venv/bin/python bench/latency.py --url --runs 3
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from underway.config import parse_duration
from underway.store import sqlite_connection

#: name → (poll interval for UNDERWAY_POLL_INTERVAL, inotify on)
VARIANTS: dict[str, tuple[str, bool]] = {
    "default": ("1ms", True),
    "poll 5ms": ("5ms", True),
    "no inotify": ("1ms", False),
}
#: With --url: the PostgreSQL store (NOTIFY wakes the other process; the poll interval is the
#: store's default, it only sets how often a waiter looks again without a notification).
POSTGRES_VARIANTS: dict[str, tuple[str, bool]] = {"postgres": ("1ms", True)}
NO_INOTIFY = "import sys; sys.modules['inotify_simple'] = None; from underway.cli import main; main()"
WARMUP = 50
SLOW = 0.05


async def measure(
    tmp: Path, name: str, jobs: int, url: str | None = None
) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """Latency figures of one variant; its worker is left running for the idle measurement.

    ``url``: the store (a PostgreSQL schema); by default a new SQLite file in ``tmp``.
    """
    from bench.apps import app, noop

    interval, inotify = {**VARIANTS, **POSTGRES_VARIANTS}[name]
    url = url or common.sqlite_url(tmp / f"{name.replace(' ', '-')}.db")
    log = tmp / f"{name.replace(' ', '-')}-worker.log"
    saved_inotify = sqlite_connection.INotify
    if not inotify:
        sqlite_connection.INotify = None
    app.settings = app.settings.replace(url=url, poll_interval=parse_duration(interval))
    try:
        await app.open()
        launcher = common.underway_command() if inotify else [sys.executable, "-c", NO_INOTIFY]
        worker = common.start(
            [*launcher, "--url", url, "--app", "bench.apps:app", "worker", "--concurrency", "10"],
            log,
            env={"UNDERWAY_URL": url, "UNDERWAY_POLL_INTERVAL": interval},
        )
        deadline = time.monotonic() + 60
        while not await app.store.workers(60):
            common.check_alive([worker], [log])
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not register within 60 s")
            await asyncio.sleep(0.05)
        load = common.loadavg()
        total: list[float] = []
        queued: list[float] = []
        ran: list[float] = []
        seen: list[float] = []
        for i in range(WARMUP + jobs):
            start = time.perf_counter()
            job = await noop.submit()
            done = await app.wait(job.id, timeout=10)
            end = time.perf_counter()
            now = time.time()
            if i < WARMUP:
                continue
            assert done.started_at is not None
            assert done.finished_at is not None
            total.append(end - start)
            queued.append(done.started_at - done.created_at)
            ran.append(done.finished_at - done.started_at)
            seen.append(now - done.finished_at)
    finally:
        await app.close()
        sqlite_connection.INotify = saved_inotify
    figures = {"load": load, "jobs": jobs}
    for label, values in (("total", total), ("queued", queued), ("run", ran), ("seen", seen)):
        for p in (50, 90, 99):
            figures[f"{label}_p{p}_ms"] = common.percentile(values, p) * 1000
    figures["total_max_ms"] = max(total) * 1000
    # Jobs slower than SLOW, by the phase where most of their time went.
    phases = ("queued", "run", "seen")
    slow = dict.fromkeys(phases, 0)
    for t, *parts in zip(total, queued, ran, seen, strict=True):
        if t > SLOW:
            slow[phases[parts.index(max(parts))]] += 1
    figures["slow"] = sum(slow.values())
    figures["slow_phase"] = slow
    return figures, worker


async def one_run(args: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    with common.workdir("latency", args.keep) as tmp, ExitStack() as schemas:
        try:
            for name in variants(args):
                url = schemas.enter_context(common.postgres_schema(args.url, args.keep)) if args.url else None
                result[name], workers[name] = await measure(tmp, name, args.jobs, url)
            # Idle: every variant's worker at once, over the same window, nothing to do.
            await asyncio.sleep(2.0)
            before = {name: common.cpu_seconds(w.pid) for name, w in workers.items()}
            load = common.loadavg()
            await asyncio.sleep(args.idle)
            for name, w in workers.items():
                if w.poll() is not None:
                    raise RuntimeError(f"the {name} worker exited while idle ({w.returncode})")
                used = common.cpu_seconds(w.pid) - before[name]
                result[name]["idle_cpu_s"] = used
                result[name]["idle_cpu_percent"] = 100.0 * used / args.idle
                result[name]["idle_load"] = load
        finally:
            for w in workers.values():
                common.stop(w)
    return result


def variants(args: Any) -> dict[str, tuple[str, bool]]:
    return POSTGRES_VARIANTS if args.url else VARIANTS


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=500, help="timed jobs per variant (after 50 warm-up)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    common.add_url_option(p)
    args = p.parse_args()
    if args.url is not None and not common.is_postgres(args.url):
        p.error("--url takes a postgresql:// URL (SQLite is the default)")
    common.install_cleanup()
    info = common.machine()
    extra = {
        "benchmark": f"submit -> wait of one no-op job at a time, {args.jobs} jobs after {WARMUP}"
        f" warm-up, 1 worker process (--concurrency 10), {args.runs} runs",
    }
    if args.url:
        extra["postgres"] = str(common.postgres_facts(args.url))
    common.print_machine(info, extra)
    runs: list[dict[str, Any]] = []
    try:
        for number in range(args.runs):
            result = asyncio.run(one_run(args))
            runs.append(result)
            line = ", ".join(
                f"{name} p50 {r['total_p50_ms']:.2f} ms idle {r['idle_cpu_percent']:.1f}% CPU"
                for name, r in result.items()
            )
            first = next(iter(result.values()))
            print(f"run {number + 1}: {line} (load {first['load']})", flush=True)
    finally:
        common.stop_all()
    if not runs:
        return
    print()
    rows = []
    for number, result in enumerate(runs, 1):
        for name, r in result.items():
            rows.append(
                [
                    number,
                    name,
                    r["load"],
                    f"{r['total_p50_ms']:.2f}",
                    f"{r['total_p90_ms']:.2f}",
                    f"{r['total_p99_ms']:.2f}",
                    f"{r['total_max_ms']:.1f}",
                    f"{r['queued_p50_ms']:.2f}/{r['queued_p99_ms']:.1f}",
                    f"{r['run_p50_ms']:.2f}/{r['run_p99_ms']:.1f}",
                    f"{r['seen_p50_ms']:.2f}/{r['seen_p99_ms']:.1f}",
                    f"{r['slow']} {'/'.join(str(v) for v in r['slow_phase'].values())}",
                    f"{r['idle_cpu_percent']:.2f}",
                ]
            )
    common.table(
        [
            "run",
            "variant",
            "load 1/5/15",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "queued p50/p99",
            "run p50/p99",
            "seen p50/p99",
            f">{SLOW * 1000:.0f}ms (q/r/s)",
            "idle CPU %",
        ],
        rows,
    )
    summary: dict[str, dict[str, list[float]]] = {}
    print(f"\nmedian of {len(runs)} runs (min-max):")
    for name in variants(args):
        figures = {
            key: [r[name][key] for r in runs]
            for key in ("total_p50_ms", "total_p90_ms", "total_p99_ms", "idle_cpu_percent")
        }
        summary[name] = figures
        print(
            f"  {name:<11} p50 {common.spread(figures['total_p50_ms'], '{:.2f}')} ms"
            f"  p90 {common.spread(figures['total_p90_ms'], '{:.2f}')} ms"
            f"  p99 {common.spread(figures['total_p99_ms'], '{:.2f}')} ms"
            f"  idle CPU {common.spread(figures['idle_cpu_percent'], '{:.2f}')} %"
        )
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
