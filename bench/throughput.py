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

With ``--url [postgresql://...]`` it runs on PostgreSQL instead, each system in a new schema,
against PostgreSQL-backed Python queues (``--peers``, default ``pgqueuer,saq,procrastinate``;
``bench/*_app.py``; install them with ``.venv/bin/pip install pgqueuer 'saq[postgres]'
procrastinate``). There every system first gets all N jobs submitted in its fastest public way
(underway: one ``store.enqueue`` of N jobs; PgQueuer and Procrastinate: one batch call; SAQ: one
call per job), timed ("enqueue s"); then its 2 worker processes are started and the time from
starting them to the moment all N jobs are seen finished (polled every 20 ms) is the run's
time: jobs/s = N / that time, worker start-up included. "After the first" leaves start-up out:
the jobs not yet done when the first finished job was seen, over the time from then to the end.

    .venv/bin/python bench/throughput.py --url --runs 3
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgSystem:
    """How to install, fill, run and count one system on a PostgreSQL schema."""

    label: str
    install: Callable[[str], Awaitable[None]]
    #: (url, n) -> seconds to submit n jobs
    enqueue: Callable[[str, int], Awaitable[float]]
    #: ``{n}``: the number of jobs; returns how many finished
    done_sql: str
    #: (url, workers, concurrency) -> one argv per process started
    commands: Callable[[str, int, int], list[list[str]]]


async def _underway_install(url: str) -> None:
    from underway.store import open_store

    store = open_store(url)
    await store.open()
    await store.close()


#: Seconds of the bare ``store.enqueue`` call of the last underway submit (without building jobs).
_STORE_CALL: list[float] = []


async def _underway_enqueue(url: str, n: int) -> float:
    from bench.apps import app, noop

    app.settings = app.settings.replace(url=url)
    await app.open()
    try:
        options = SubmitOptions()
        start = time.perf_counter()
        jobs = [app.new_job(noop, {}, options) for _ in range(n)]
        built = time.perf_counter()
        await app.store.enqueue(jobs)
        end = time.perf_counter()
    finally:
        await app.close()
    _STORE_CALL.append(end - built)
    return end - start


def _underway_commands(url: str, workers: int, concurrency: int) -> list[list[str]]:
    argv = [*common.underway_command(), "--url", url, "--app", "bench.apps:app", "worker"]
    return [[*argv, "--concurrency", str(concurrency)] for _ in range(workers)]


def _peer(module: str, attribute: str) -> Callable[..., Any]:
    """A function of a peer's bench app, imported when called (the peers are optional)."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f"bench.{module}"), attribute)(*args)

    return call


PG_SYSTEMS: dict[str, PgSystem] = {
    "underway": PgSystem(
        "underway",
        _underway_install,
        _underway_enqueue,
        "SELECT count(*) FROM underway_jobs WHERE status = 'succeeded'",
        _underway_commands,
    ),
    "pgqueuer": PgSystem(
        "PgQueuer",
        _peer("pgqueuer_app", "install"),
        _peer("pgqueuer_app", "enqueue"),
        "SELECT {n} - count(*) FROM pgqueuer",
        lambda url, workers, _c: [[sys.executable, "-m", "bench.pgqueuer_app"] for _ in range(workers)],
    ),
    "saq": PgSystem(
        "SAQ",
        _peer("saq_app", "install"),
        _peer("saq_app", "enqueue"),
        "SELECT count(*) FROM saq_jobs WHERE status = 'complete'",
        lambda url, workers, _c: [
            [str(common.VENV_BIN / "saq"), "bench.saq_app.settings", "--workers", str(workers)]
        ],
    ),
    "procrastinate": PgSystem(
        "Procrastinate",
        _peer("procrastinate_app", "install"),
        _peer("procrastinate_app", "enqueue"),
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        lambda url, workers, _c: [
            [
                str(common.VENV_BIN / "procrastinate"),
                "--app",
                "bench.procrastinate_app.app",
                "worker",
                "--concurrency",
                str(PROCRASTINATE_CONCURRENCY),
            ]
            for _ in range(workers)
        ],
    ),
}
#: Procrastinate's worker runs 1 job at a time by default.
PROCRASTINATE_CONCURRENCY = 10


async def run_postgres(system: str, base: str, n: int, args: Any, tmp: Path) -> dict[str, Any]:
    """Submit n jobs, then start the workers and time them until all n are done."""
    import psycopg

    spec = PG_SYSTEMS[system]
    with common.postgres_schema(base, args.keep) as url:
        await spec.install(url)
        load = common.loadavg()
        enqueue_seconds = await spec.enqueue(url, n)
        done_query = spec.done_sql.format(n=n)
        commands = spec.commands(url, args.workers, args.concurrency)
        logs = [tmp / f"{system}-worker-{i}.log" for i in range(len(commands))]
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute(done_query.encode()).fetchone() != (0,):
                raise RuntimeError(f"{system}: jobs done before the workers started")
            start = time.perf_counter()
            procs = [
                common.start(argv, log, env={"BENCH_PG_URL": url})
                for argv, log in zip(commands, logs, strict=True)
            ]
            try:
                first, first_done, end = await _poll_done(conn, done_query, n, procs, logs)
                cpu = sum(common.tree_cpu_seconds(proc.pid) for proc in procs)
            finally:
                for proc in procs:
                    common.stop(proc)
    figures: dict[str, Any] = {
        "load": load,
        "enqueue_seconds": enqueue_seconds,
        "enqueue_jobs_per_s": n / enqueue_seconds,
        "seconds": end - start,
        "jobs_per_s": n / (end - start),
        "first_seen_s": first - start,
        "after_first_jobs_per_s": (n - first_done) / (end - first) if end > first else float("nan"),
        "worker_cpu_s": cpu,
    }
    if system == "underway":
        figures["store_call_seconds"] = _STORE_CALL[-1]
    return figures


async def _poll_done(conn: Any, query: str, n: int, procs: Any, logs: Any) -> tuple[float, int, float]:
    """Poll every POLL s: (when a first finished job was seen, how many then, when all n were)."""
    deadline = time.monotonic() + TIMEOUT
    first: tuple[float, int] | None = None
    while True:
        done = conn.execute(query.encode()).fetchone()[0]
        now = time.perf_counter()
        if done > 0 and first is None:
            first = (now, done)
        if done >= n:
            assert first is not None
            return first[0], first[1], now
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {n} jobs finished within {TIMEOUT:g} s")
        common.check_alive(procs, logs)
        await asyncio.sleep(POLL)


async def one_postgres_run(number: int, args: Any) -> dict[str, Any]:
    systems = ["underway", *args.peers]
    shift = number % len(systems)
    order = systems[shift:] + systems[:shift]
    result: dict[str, Any] = {"order": order}
    with common.workdir("throughput-pg", args.keep) as tmp:
        for system in order:
            try:
                result[system] = await run_postgres(system, args.url, args.jobs, args, tmp)
            except Exception as exc:
                print(f"  {system} FAILED: {type(exc).__name__}: {exc}", flush=True)
                for log in sorted(tmp.glob(f"{system}-worker-*.log")):
                    print(common.tail(log, 15))
                result[system] = None
    return result


def postgres_main(args: Any, info: dict[str, Any]) -> None:
    common.print_machine(
        info,
        {
            "benchmark": f"{args.jobs} no-op jobs submitted first, then {args.workers} worker processes"
            f" started and timed until all are done; PostgreSQL; {args.runs} runs",
            "postgres": common.postgres_facts(args.url),
            "underway": f"worker --concurrency {args.concurrency}; one store.enqueue of {args.jobs} jobs",
            "peers": ", ".join(f"{p} {_version(p)}" for p in args.peers)
            + f" (procrastinate worker --concurrency {PROCRASTINATE_CONCURRENCY})",
        },
    )
    runs = []
    for number in range(args.runs):
        result = asyncio.run(one_postgres_run(number, args))
        runs.append(result)
        line = ", ".join(
            f"{s} {result[s]['jobs_per_s']:.0f}" if result[s] else f"{s} failed" for s in result["order"]
        )
        print(f"run {number + 1}: {line} jobs/s", flush=True)
    systems = ["underway", *args.peers]
    print()
    rows = []
    for number, result in enumerate(runs, 1):
        for system in systems:
            r = result[system]
            if r is None:
                rows.append([number, system, "", "failed", "", "", "", "", ""])
                continue
            rows.append(
                [
                    number,
                    PG_SYSTEMS[system].label,
                    r["load"],
                    f"{r['jobs_per_s']:.0f}",
                    f"{r['after_first_jobs_per_s']:.0f}",
                    f"{r['first_seen_s']:.2f}",
                    f"{r['seconds']:.2f}",
                    f"{r['enqueue_seconds']:.3f} ({r['enqueue_jobs_per_s']:.0f}/s)",
                    f"{r['worker_cpu_s']:.2f}",
                ]
            )
    common.table(
        [
            "run",
            "system",
            "load 1/5/15",
            "jobs/s",
            "after first",
            "first s",
            "total s",
            "enqueue s (jobs/s)",
            "worker CPU s",
        ],
        rows,
    )
    summary: dict[str, list[float]] = {}
    keys = ("jobs_per_s", "after_first_jobs_per_s", "enqueue_jobs_per_s", "enqueue_seconds", "worker_cpu_s")
    for system in systems:
        for key in keys:
            summary[f"{system}_{key}"] = [r[system][key] for r in runs if r[system]]
    summary["underway_store_call_seconds"] = [
        r["underway"]["store_call_seconds"] for r in runs if r["underway"]
    ]
    for peer in args.peers:
        for key in ("jobs_per_s", "after_first_jobs_per_s", "enqueue_jobs_per_s"):
            summary[f"ratio_{peer}_{key}"] = [
                r["underway"][key] / r[peer][key] for r in runs if r["underway"] and r[peer]
            ]
    print("\nmedian of the runs (min-max): jobs/s from workers start | after the first | enqueue jobs/s")
    for system in systems:
        print(
            f"  {PG_SYSTEMS[system].label:<14} {common.spread(summary[f'{system}_jobs_per_s']):>18}"
            f" | {common.spread(summary[f'{system}_after_first_jobs_per_s']):>18}"
            f" | {common.spread(summary[f'{system}_enqueue_jobs_per_s'])}"
            f"  worker CPU {common.spread(summary[f'{system}_worker_cpu_s'], '{:.2f}')} s"
        )
    print(
        "  underway store.enqueue call alone:"
        f" {common.spread(summary['underway_store_call_seconds'], '{:.3f}')} s"
    )
    for peer in args.peers:
        print(
            f"  ratio underway / {PG_SYSTEMS[peer].label:<14}"
            f" {common.spread(summary[f'ratio_{peer}_jobs_per_s'], '{:.2f}'):>18}"
            f" | {common.spread(summary[f'ratio_{peer}_after_first_jobs_per_s'], '{:.2f}'):>18}"
            f" | {common.spread(summary[f'ratio_{peer}_enqueue_jobs_per_s'], '{:.2f}')}"
        )
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


def _version(peer: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(peer)
    except PackageNotFoundError:
        return "not installed"


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
    p.add_argument(
        "--peers",
        default="pgqueuer,saq,procrastinate",
        help="with --url: the PostgreSQL queues to compare with (comma-separated; '' for none)",
    )
    common.add_url_option(p)
    args = p.parse_args()
    HUEY_OPTIONS[1] = str(args.workers)
    common.install_cleanup()
    info = common.machine()
    if common.is_postgres(args.url):
        args.peers = [peer for peer in args.peers.split(",") if peer]
        try:
            postgres_main(args, info)
        finally:
            common.stop_all()
        return
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
