"""Claim latency with 1,000 vs 1,000,000 queued jobs: it should not depend on the queue's length.

Once per invocation, a store is filled with N queued ``noop`` jobs for each size (direct
``store.enqueue`` in chunks of 10,000); each run then works on a fresh copy of that file.
A run times ``store.claim(worker, [], 1, 30)`` ("any queue, 1 job") and
``store.claim(worker, ["default"], 10, 30)`` ("one queue, 10 jobs") 200 times each, after 10
untimed warm-up claims (a series stops early after 12 s, with at least 20 timed claims, when
claims are slow). After each claim (untimed) the claimed jobs are recorded succeeded
and as many new jobs are enqueued, so the queue keeps exactly N jobs. It also times the bare
candidate queries on a plain ``sqlite3`` connection, and prints their ``EXPLAIN QUERY PLAN``;
for comparison also those of the "any queue" query forced onto its partial index with
``INDEXED BY jobs_claim_any`` (not what underway runs).

    .venv/bin/python bench/claim.py [--runs 5] [--sizes 1000,1000000]

With ``--url [postgresql://...]`` it runs on PostgreSQL: one new schema per size, filled once
the same way (then ``ANALYZE``, as autovacuum does soon after such a fill) and used by every run
(the claims keep its queue at N jobs; finished rows accumulate: 2,200 per run). The bare
statement is the store's query that finds and locks the jobs (the candidate query, or the
one-statement claim of older versions) in a transaction that is rolled back, timed on a plain
psycopg connection (round trip included); the plans are ``EXPLAIN (ANALYZE, BUFFERS)`` of it,
rolled back too.

    .venv/bin/python bench/claim.py --url --runs 3
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from underway.jobs import Status, new_job_id
from underway.store import Lease, NewJob, WorkerWrite, open_store
from underway.store.sqlite import Q

FILL_CHUNK = 10_000
CLAIMS = 200
WARMUP = 10
#: Seconds one series of claims (or of bare queries) may take; a slow series stops early,
#: after at least MIN_SAMPLES timed calls, so that a run stays bounded in time.
BUDGET = 8.0
MIN_SAMPLES = 15
BARE_BUDGET = 3.0
#: The "any queue" candidate query forced onto its partial index: not underway's query (yet),
#: timed for comparison.
WORKER = "bench-claim:0"
#: mode → (queues, limit)
MODES: dict[str, tuple[list[str], int]] = {
    "any queue, 1 job": ([], 1),
    "one queue, 10 jobs": (["default"], 10),
}


def new_jobs(count: int) -> list[NewJob]:
    now = time.time()
    return [NewJob(id=new_job_id(), queue="default", task="noop", args={}, run_at=now) for _ in range(count)]


async def fill_url(url: str, size: int) -> float:
    """Enqueue ``size`` jobs into the store at ``url`` in chunks of FILL_CHUNK; the seconds it took."""
    store = open_store(url)
    start = time.perf_counter()
    try:
        await store.open()
        for first in range(0, size, FILL_CHUNK):
            await store.enqueue(new_jobs(min(FILL_CHUNK, size - first)))
    finally:
        await store.close()
    return time.perf_counter() - start


async def fill(path: Path, size: int) -> float:
    """A store with ``size`` queued jobs, closed (its WAL folded in); the seconds it took."""
    start = time.perf_counter()
    await fill_url(common.sqlite_url(path), size)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - start


def _candidate_params(queue: str | None, now: float, limit: int) -> dict[str, Any]:
    """Parameters of the SQLite candidate queries: nothing paused or at its limit."""
    params: dict[str, Any] = {"now": now, "limit": limit, "skip_keys": "[]"}
    if queue is None:
        params["skip_queues"] = "[]"
    else:
        params["queue"] = queue
    return params


def query_plans(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    now = time.time()
    statements = {
        "claim_candidates_any": (Q["claim_candidates_any"], _candidate_params(None, now, 1)),
        "claim_candidates_queue": (Q["claim_candidates_queue"], _candidate_params("default", now, 10)),
        "claim": (
            Q["claim"],
            {"lease_until": now + 30, "worker_id": WORKER, "now": now, "ids": '["x"]'},
        ),
    }
    try:
        return {
            name: [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            for name, (sql, params) in statements.items()
        }
    finally:
        conn.close()


def bare_queries(path: Path) -> dict[str, float]:
    """Median µs of the candidate queries alone, on a plain connection (no thread hop).

    At most CLAIMS queries per mode, at least 5, for about BARE_BUDGET seconds.
    """
    queries: dict[str, tuple[str, Callable[[float], Any]]] = {}
    for mode, (queues, limit) in MODES.items():
        if queues:
            queries[mode] = (
                Q["claim_candidates_queue"],
                lambda now, q=queues[0], n=limit: _candidate_params(q, now, n),
            )
        else:
            queries[mode] = (Q["claim_candidates_any"], lambda now, n=limit: _candidate_params(None, now, n))
    conn = sqlite3.connect(path)
    try:
        out = {}
        for name, (sql, params) in queries.items():
            times: list[float] = []
            deadline = time.monotonic() + BARE_BUDGET
            while len(times) < CLAIMS and (time.monotonic() < deadline or len(times) < 5):
                bound = params(time.time())
                start = time.perf_counter()
                conn.execute(sql, bound).fetchall()
                times.append(time.perf_counter() - start)
            out[name] = common.median(times[1:]) * 1e6
        return out
    finally:
        conn.close()


async def measure(path: Path, size: int) -> dict[str, Any]:
    figures = await measure_claims(common.sqlite_url(path), size)
    conn = sqlite3.connect(path)
    try:
        queued = conn.execute("SELECT count(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
    finally:
        conn.close()
    if queued != size:
        raise RuntimeError(f"the queue should still hold {size} jobs, not {queued}")
    figures["bare"] = bare_queries(path)
    return figures


async def measure_claims(url: str, size: int) -> dict[str, Any]:
    """``store.claim`` CLAIMS times per mode, keeping ``size`` jobs queued."""
    store = open_store(url)
    figures: dict[str, Any] = {"load": common.loadavg()}
    try:
        await store.open()
        for mode, (queues, limit) in MODES.items():
            times: list[float] = []
            deadline = time.monotonic() + BUDGET
            n = 0
            warmup = WARMUP
            while len(times) < CLAIMS and (time.monotonic() < deadline or len(times) < MIN_SAMPLES):
                start = time.perf_counter()
                jobs = await store.claim(WORKER, queues, limit, 30.0)
                elapsed = time.perf_counter() - start
                if len(jobs) != limit:
                    raise RuntimeError(f"claimed {len(jobs)} jobs, not {limit}, from {size} queued")
                if elapsed > 0.1:  # slow claims: a shorter warm-up keeps the run bounded
                    warmup = min(warmup, 3)
                if n >= warmup:
                    times.append(elapsed)
                await store.record(
                    [WorkerWrite(lease=Lease(j.id, j.attempt), status=Status.SUCCEEDED) for j in jobs]
                )
                await store.enqueue(new_jobs(len(jobs)))
                n += 1
            figures[f"{mode} n"] = len(times)
            figures[f"{mode} p50_us"] = common.percentile(times, 50) * 1e6
            figures[f"{mode} p99_us"] = common.percentile(times, 99) * 1e6
    finally:
        await store.close()
    return figures


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_claim(mode: str) -> tuple[bytes, Callable[[float], dict[str, Any]]]:
    """The store's statement that finds and locks the jobs to claim for ``mode`` (the candidate
    query where the claim has one, else the one-statement claim), and its parameters."""
    from underway.store.postgres import Q as PQ

    queues, limit = MODES[mode]
    candidates = "claim_candidates_any" in PQ

    def params(now: float) -> dict[str, Any]:
        bound: dict[str, Any] = {"now": now, "limit": limit, "lease_until": now + 30, "worker_id": WORKER}
        if candidates:
            bound["skip_keys"] = []
            if not queues:
                bound["skip_queues"] = []
        if queues:
            bound["queues"] = queues
        return bound

    if candidates:
        return (PQ["claim_candidates_queues"] if queues else PQ["claim_candidates_any"]), params
    return (PQ["claim_queues"] if queues else PQ["claim_any"]), params


def pg_plans(url: str) -> dict[str, list[str]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each claim statement, rolled back."""
    import psycopg

    plans = {}
    with psycopg.connect(url) as conn:
        for mode in MODES:
            query, params = _pg_claim(mode)
            rows = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS) " + query, params(time.time())).fetchall()
            conn.rollback()
            plans[mode] = [row[0] for row in rows]
    return plans


def pg_bare(url: str) -> dict[str, float]:
    """Median µs of each claim statement alone (rolled back) on a plain connection."""
    import psycopg

    out = {}
    with psycopg.connect(url) as conn:
        for mode in MODES:
            query, params = _pg_claim(mode)
            times: list[float] = []
            deadline = time.monotonic() + BARE_BUDGET
            while len(times) < CLAIMS and (time.monotonic() < deadline or len(times) < 5):
                bound = params(time.time())
                start = time.perf_counter()
                conn.execute(query, bound).fetchall()
                times.append(time.perf_counter() - start)
                conn.rollback()
            out[mode] = common.median(times[1:]) * 1e6
    return out


def pg_queued(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(b"SELECT count(*) FROM underway_jobs WHERE status = 'queued'").fetchone()
    return int(row[0]) if row else -1


async def measure_postgres(url: str, size: int) -> dict[str, Any]:
    figures = await measure_claims(url, size)
    queued = pg_queued(url)
    if queued != size:
        raise RuntimeError(f"the queue should still hold {size} jobs, not {queued}")
    figures["bare"] = pg_bare(url)
    return figures


def postgres_runs(args: Any, sizes: list[int], stack: ExitStack) -> tuple[list[dict[str, Any]], Any, Any]:
    """Fill one schema per size, then the runs; (runs, fill seconds, plans at the largest size)."""
    import psycopg

    urls: dict[int, str] = {}
    fills: dict[int, float] = {}
    for size in sizes:
        urls[size] = stack.enter_context(common.postgres_schema(args.url, args.keep))
        fills[size] = asyncio.run(fill_url(urls[size], size))
        with psycopg.connect(urls[size], autocommit=True) as conn:
            conn.execute(b"ANALYZE underway_jobs")
            row = conn.execute(b"SELECT pg_total_relation_size('underway_jobs')").fetchone()
        megabytes = (row[0] if row else 0) / 1e6
        print(
            f"filled {size:,} queued jobs in {fills[size]:.1f} s (jobs table and indexes {megabytes:.0f} MB)"
        )
    plans = pg_plans(urls[max(sizes)])
    _print_plans(plans)
    runs: list[dict[str, Any]] = []
    for number in range(args.runs):
        result: dict[str, Any] = {}
        for size in sizes if number % 2 == 0 else sizes[::-1]:
            result[str(size)] = asyncio.run(measure_postgres(urls[size], size))
        runs.append(result)
        _print_run(number, result, sizes)
    return runs, fills, plans


def _print_plans(plans: dict[str, list[str]]) -> None:
    print()
    for name, plan in plans.items():
        print(f"plan {name}:")
        for line in plan:
            print(f"  {line}")
    print()


def _print_run(number: int, result: dict[str, Any], sizes: list[int]) -> None:
    line = "; ".join(
        f"{int(size):,}: " + ", ".join(f"{m} p50 {r[f'{m} p50_us']:.0f} µs" for m in MODES)
        for size, r in result.items()
    )
    print(f"run {number + 1}: {line} (load {result[str(sizes[0])]['load']})", flush=True)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,1000000", help="comma-separated numbers of queued jobs")
    common.add_url_option(p)
    args = p.parse_args()
    if args.url is not None and not common.is_postgres(args.url):
        p.error("--url takes a postgresql:// URL (SQLite is the default)")
    sizes = [int(s) for s in args.sizes.split(",")]
    common.install_cleanup()
    info = common.machine()
    extra = {
        "benchmark": f"store.claim() latency with {', '.join(f'{s:,}' for s in sizes)} queued jobs,"
        f" {CLAIMS} claims per mode, {args.runs} runs",
    }
    if args.url:
        extra["postgres"] = str(common.postgres_facts(args.url))
    common.print_machine(info, extra)
    runs: list[dict[str, Any]] = []
    if args.url:
        with ExitStack() as stack:
            runs, fills, plans = postgres_runs(args, sizes, stack)
    else:
        runs, fills, plans = sqlite_runs(args, sizes)
    report(args, info, sizes, runs, fills, plans)


def sqlite_runs(args: Any, sizes: list[int]) -> tuple[list[dict[str, Any]], Any, Any]:
    runs: list[dict[str, Any]] = []
    with common.workdir("claim", args.keep) as tmp:
        templates = {}
        fills = {}
        for size in sizes:
            templates[size] = tmp / f"template-{size}.db"
            fills[size] = asyncio.run(fill(templates[size], size))
            megabytes = templates[size].stat().st_size / 1e6
            print(f"filled {size:,} queued jobs in {fills[size]:.1f} s ({megabytes:.0f} MB)", flush=True)
        plans = query_plans(templates[max(sizes)])
        print()
        for name, plan in plans.items():
            print(f"EXPLAIN QUERY PLAN {name}:")
            for line in plan:
                print(f"  {line}")
        print()
        for number in range(args.runs):
            result: dict[str, Any] = {}
            order = sizes if number % 2 == 0 else sizes[::-1]
            for size in order:
                path = tmp / f"run-{number}-{size}.db"
                shutil.copyfile(templates[size], path)
                result[str(size)] = asyncio.run(measure(path, size))
                path.unlink()
                for suffix in ("-wal", "-shm", "-lock"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            runs.append(result)
            _print_run(number, result, sizes)
    return runs, fills, plans


def report(
    args: Any, info: dict[str, Any], sizes: list[int], runs: list[dict[str, Any]], fills: Any, plans: Any
) -> None:
    print()
    rows = []
    for number, result in enumerate(runs, 1):
        for size in sizes:
            r = result[str(size)]
            for mode in MODES:
                rows.append(
                    [
                        number,
                        f"{size:,}",
                        mode,
                        r["load"],
                        f"{r[f'{mode} p50_us']:.0f}",
                        f"{r[f'{mode} p99_us']:.0f}",
                        r[f"{mode} n"],
                        f"{r['bare'][mode]:.1f}",
                    ]
                )
    common.table(
        ["run", "queued", "claim", "load 1/5/15", "p50 µs", "p99 µs", "claims", "bare query p50 µs"], rows
    )
    summary: dict[str, Any] = {}
    print(f"\nmedian of {len(runs)} runs (min-max), µs per store.claim():")
    for mode in MODES:
        for size in sizes:
            for stat in ("p50", "p99"):
                summary[f"{size} {mode} {stat}_us"] = [r[str(size)][f"{mode} {stat}_us"] for r in runs]
            summary[f"{size} {mode} bare_us"] = [r[str(size)]["bare"][mode] for r in runs]
            print(
                f"  {mode:<19} {size:>9,} queued: p50 {common.spread(summary[f'{size} {mode} p50_us'])}"
                f"  p99 {common.spread(summary[f'{size} {mode} p99_us'])}"
                f"  bare query {common.spread(summary[f'{size} {mode} bare_us'], '{:.1f}')}"
            )
        if len(sizes) == 2:
            small, large = sizes
            ratios = [r[str(large)][f"{mode} p50_us"] / r[str(small)][f"{mode} p50_us"] for r in runs]
            summary[f"{mode} ratio"] = ratios
            print(f"  {mode:<19} ratio {large:,} / {small:,} (p50): {common.spread(ratios, '{:.2f}')}")
    common.write_json(
        args.json,
        {
            "machine": info,
            "args": vars(args),
            "fill_seconds": fills,
            "plans": plans,
            "runs": runs,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
