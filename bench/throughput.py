"""End-to-end throughput of no-op jobs on SQLite with 2 worker processes, against huey.

Each run, on fresh SQLite files in a temporary directory:

* underway: 2 ``underway worker --concurrency 100`` processes; once both are registered, the
  benchmark enqueues N ``noop`` jobs in chunks of 1,000 (``app.new_job`` + ``store.enqueue``)
  and polls ``SELECT count(*) FROM jobs WHERE status = 'succeeded'`` (an index count) every
  20 ms until all N succeeded.
* huey: ``huey_consumer bench.huey_app.huey -w 2 -k process`` (SqliteHuey, polling an empty
  queue every 1-10 ms rather than huey's default 0.1-10 s, so it starts at once); the benchmark
  enqueues N no-op tasks (one call each: huey has no bulk enqueue) and polls the count of
  stored results (huey's ``kv`` table) until all N are there.

Reported: jobs/s from the first enqueue to the moment all N were seen finished, and drain-only
jobs/s: the jobs left unfinished when enqueueing ended, over the time from then to the end.
The order of the two systems alternates between runs.

huey runs twice: with ``synchronous=NORMAL`` like underway's store (like for like) and with its
own default ``FULL`` (what ``SqliteHuey(filename=...)`` gives; skip with --skip-huey-default).

    .venv/bin/python bench/throughput.py [--runs 5] [--jobs 10000]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from underway.tasks import SubmitOptions

POLL = 0.02
CHUNK = 1000
TIMEOUT = 120.0
HUEY_OPTIONS = ["-w", "2", "-k", "process", "-q", "-d", "0.001", "-m", "0.01", "-b", "1.15"]


async def wait_for_count(conn: sqlite3.Connection, query: str, n: int, procs: Any, logs: Any) -> float:
    """Poll ``query`` every POLL seconds until it reaches ``n``; the wall time it was seen."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if conn.execute(query).fetchone()[0] >= n:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all {n} jobs finished within {TIMEOUT:g} s")
        common.check_alive(procs, logs)
        await asyncio.sleep(POLL)


async def run_underway(tmp: Path, n: int, workers: int, concurrency: int, queues: str) -> dict[str, Any]:
    from bench.apps import app, noop

    db = tmp / "underway.db"
    url = common.sqlite_url(db)
    app.settings = app.settings.replace(url=url)
    await app.open()
    logs = [tmp / f"underway-worker-{i}.log" for i in range(workers)]
    argv = [*common.underway_command(), "--url", url, "--app", "bench.apps:app", "worker"]
    argv += ["--concurrency", str(concurrency)] + (["--queues", queues] if queues else [])
    procs = [common.start(argv, log, env={"UNDERWAY_URL": url}) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while len(await app.store.workers(60)) < workers:
            common.check_alive(procs, logs)
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not register within 60 s")
            await asyncio.sleep(0.05)
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        done_query = "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
        options = SubmitOptions()
        load = common.loadavg()
        start = time.perf_counter()
        for first in range(0, n, CHUNK):
            await app.store.enqueue([app.new_job(noop, {}, options) for _ in range(min(CHUNK, n - first))])
        enqueued = time.perf_counter()
        done_at_enqueue_end = conn.execute(done_query).fetchone()[0]
        end = await wait_for_count(conn, done_query, n, procs, logs)
        cpu = sum(common.cpu_seconds(proc.pid) for proc in procs)
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        by_type = dict(conn.execute("SELECT json_extract(data, '$.status'), count(*) FROM events GROUP BY 1"))
        conn.close()
    finally:
        for proc in procs:
            common.stop(proc)
        await app.close()
    return _figures(n, start, enqueued, end, done_at_enqueue_end) | {
        "load": load,
        "worker_cpu_s": cpu,
        "events": events,
        "events_per_job": events / n,
        "status_events": by_type,
    }


async def run_huey(tmp: Path, n: int, sync: str) -> dict[str, Any]:
    from bench.huey_app import HUEY_NAME, make_huey

    db = tmp / f"huey-{sync}.db"
    huey, noop = make_huey(str(db), sync)
    log = tmp / f"huey-{sync}-consumer.log"
    consumer = common.start(
        [str(common.VENV_BIN / "huey_consumer"), "bench.huey_app.huey", *HUEY_OPTIONS],
        log,
        env={"BENCH_HUEY_DB": str(db), "BENCH_HUEY_SYNC": sync},
    )
    procs, logs = [consumer], [log]
    try:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        done_query = f"SELECT count(*) FROM kv WHERE queue = '{HUEY_NAME}'"
        # Warm up: both worker processes are up once a few tasks ran; then forget the results.
        for _ in range(4):
            noop()
        await wait_for_count(conn, done_query, 4, procs, logs)
        await asyncio.sleep(0.5)
        huey.storage.flush_results()
        load = common.loadavg()
        start = time.perf_counter()
        for _ in range(n):
            noop()
        enqueued = time.perf_counter()
        done_at_enqueue_end = conn.execute(done_query).fetchone()[0]
        end = await wait_for_count(conn, done_query, n, procs, logs)
        cpu = common.tree_cpu_seconds(consumer.pid)
        conn.close()
    finally:
        common.stop(consumer)
        huey.storage.close()
    return _figures(n, start, enqueued, end, done_at_enqueue_end) | {"load": load, "worker_cpu_s": cpu}


def _figures(n: int, start: float, enqueued: float, end: float, done_at_enqueue_end: int) -> dict[str, Any]:
    return {
        "seconds": end - start,
        "enqueue_seconds": enqueued - start,
        "done_at_enqueue_end": done_at_enqueue_end,
        "jobs_per_s": n / (end - start),
        "drain_jobs_per_s": (n - done_at_enqueue_end) / (end - enqueued) if end > enqueued else float("nan"),
    }


SYSTEMS = {
    "underway": "underway",
    "huey": "huey sync=NORMAL (as underway)",
    "huey_default": "huey sync=FULL (its default)",
}


async def one_run(number: int, args: Any) -> dict[str, Any]:
    systems = [s for s in SYSTEMS if s != "huey_default" or not args.skip_huey_default]
    shift = number % len(systems)
    order = systems[shift:] + systems[:shift]
    with common.workdir("throughput", args.keep) as tmp:
        result: dict[str, Any] = {"order": order}
        for system in order:
            if system == "underway":
                result[system] = await run_underway(
                    tmp, args.jobs, args.workers, args.concurrency, args.queues
                )
            else:
                sync = "default" if system == "huey_default" else "normal"
                result[system] = await run_huey(tmp, args.jobs, sync)
        for system in systems[1:]:
            result[f"ratio_{system}"] = result["underway"]["jobs_per_s"] / result[system]["jobs_per_s"]
            result[f"drain_ratio_{system}"] = (
                result["underway"]["drain_jobs_per_s"] / result[system]["drain_jobs_per_s"]
            )
        return result


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=2, help="worker processes of each system")
    p.add_argument("--concurrency", type=int, default=100, help="underway --concurrency per worker")
    p.add_argument("--queues", default="", help="underway worker --queues (default: all queues)")
    p.add_argument(
        "--skip-huey-default", action="store_true", help="do not also run huey with synchronous=FULL"
    )
    args = p.parse_args()
    HUEY_OPTIONS[1] = str(args.workers)
    common.install_cleanup()
    info = common.machine()
    common.print_machine(
        info,
        {
            "benchmark": f"{args.jobs} no-op jobs, {args.workers} worker processes, SQLite, {args.runs} runs",
            "underway": f"worker --concurrency {args.concurrency}"
            + (f" --queues {args.queues}" if args.queues else "")
            + f"; enqueue in chunks of {CHUNK}",
            "huey": f"huey_consumer bench.huey_app.huey {' '.join(HUEY_OPTIONS)}; enqueue one by one",
        },
    )
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        for number in range(args.runs):
            try:
                result = asyncio.run(one_run(number, args))
            except Exception as exc:  # one failed run (e.g. huey's "database is locked") is reported
                failures.append(f"run {number + 1}: {type(exc).__name__}: {exc}")
                print(f"run {number + 1} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            runs.append(result)
            line = ", ".join(f"{s} {result[s]['jobs_per_s']:.0f}" for s in result["order"])
            print(f"run {number + 1}: {line} jobs/s (load {result['underway']['load']})", flush=True)
    finally:
        common.stop_all()
    if not runs:
        raise SystemExit("every run failed: " + "; ".join(failures))
    systems = [s for s in SYSTEMS if s in runs[0]]
    print()
    rows = []
    for number, result in enumerate(runs, 1):
        for system in systems:
            r = result[system]
            rows.append(
                [
                    number,
                    SYSTEMS[system],
                    r["load"],
                    f"{r['jobs_per_s']:.0f}",
                    f"{r['drain_jobs_per_s']:.0f}",
                    f"{r['enqueue_seconds']:.2f}",
                    r["done_at_enqueue_end"],
                    f"{r['seconds']:.2f}",
                    f"{r['worker_cpu_s']:.2f}",
                ]
            )
    common.table(
        [
            "run",
            "system",
            "load 1/5/15",
            "jobs/s",
            "drain jobs/s",
            "enqueue s",
            "done then",
            "total s",
            "worker CPU s",
        ],
        rows,
    )
    summary: dict[str, list[float]] = {}
    for system in systems:
        summary[f"{system}_jobs_per_s"] = [r[system]["jobs_per_s"] for r in runs]
        summary[f"{system}_drain_jobs_per_s"] = [r[system]["drain_jobs_per_s"] for r in runs]
    for system in systems[1:]:
        summary[f"ratio_{system}"] = [r[f"ratio_{system}"] for r in runs]
        summary[f"drain_ratio_{system}"] = [r[f"drain_ratio_{system}"] for r in runs]
    print(f"\nmedian of {len(runs)} runs (min-max), jobs/s: end to end | drain only")
    for system in systems:
        print(
            f"  {SYSTEMS[system]:<32} {common.spread(summary[f'{system}_jobs_per_s']):>20}"
            f" | {common.spread(summary[f'{system}_drain_jobs_per_s'])}"
        )
    for system in systems[1:]:
        ratio = common.spread(summary[f"ratio_{system}"], "{:.2f}")
        drain = common.spread(summary[f"drain_ratio_{system}"], "{:.2f}")
        print(f"  ratio underway / {SYSTEMS[system]:<32} {ratio:>20} | {drain}")
    u = runs[-1]["underway"]
    print(
        f"  underway wrote {u['events_per_job']:.1f} events per job {u['status_events']}"
        " (status queued, running, succeeded); huey keeps no history, only the result row"
    )
    if failures:
        print(f"  {len(failures)} failed run(s), left out: " + "; ".join(failures))
    common.write_json(
        args.json,
        {"machine": info, "args": vars(args), "runs": runs, "summary": summary, "failures": failures},
    )
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
