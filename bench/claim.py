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
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
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


async def fill(path: Path, size: int) -> float:
    """A store with ``size`` queued jobs, closed (its WAL folded in); the seconds it took."""
    store = open_store(common.sqlite_url(path))
    start = time.perf_counter()
    try:
        await store.open()
        for first in range(0, size, FILL_CHUNK):
            await store.enqueue(new_jobs(min(FILL_CHUNK, size - first)))
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - start


def query_plans(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    now = time.time()
    statements = {
        "claim_candidates_any": (Q["claim_candidates_any"], {"now": now, "limit": 1}),
        "claim_candidates_queue": (Q["claim_candidates_queue"], ("default", now, 10)),
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
            queries[mode] = (Q["claim_candidates_queue"], lambda now, q=queues[0], n=limit: (q, now, n))
        else:
            queries[mode] = (Q["claim_candidates_any"], lambda now, n=limit: {"now": now, "limit": n})
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
    store = open_store(common.sqlite_url(path))
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
    conn = sqlite3.connect(path)
    try:
        queued = conn.execute("SELECT count(*) FROM jobs WHERE status = 'queued'").fetchone()[0]
    finally:
        conn.close()
    if queued != size:
        raise RuntimeError(f"the queue should still hold {size} jobs, not {queued}")
    figures["bare"] = bare_queries(path)
    return figures


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,1000000", help="comma-separated numbers of queued jobs")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    common.install_cleanup()
    info = common.machine()
    common.print_machine(
        info,
        {
            "benchmark": f"store.claim() latency with {', '.join(f'{s:,}' for s in sizes)} queued jobs,"
            f" {CLAIMS} claims per mode, {args.runs} runs",
        },
    )
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
            line = "; ".join(
                f"{int(size):,}: " + ", ".join(f"{m} p50 {r[f'{m} p50_us']:.0f} µs" for m in MODES)
                for size, r in result.items()
            )
            print(f"run {number + 1}: {line} (load {result[str(sizes[0])]['load']})", flush=True)
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
