"""Batches and per-key limits: submitting a 10,000-item batch, and draining it.

Two measurements, each on fresh stores (SQLite files in a temporary directory; with ``--url``,
new PostgreSQL schemas as in ``throughput.py``):

* ``submit``: ``app.submit_batch(item, items)`` of ``--items`` (10,000) items
  ``{"url": "https://host<i % 100>.example/<i>", "n": i}``, validation included, after a
  warm-up batch of 100 items on the same store; also the time of building the jobs alone
  (validation, ids: ``App._batch_jobs``, or ``app.new_job`` per item before it) on the same
  items. On SQLite and, with ``--url``, on PostgreSQL.
* ``drain``: 2 ``underway worker --concurrency 100`` processes, registered and idle; the queue
  ``bench`` is paused, ``--jobs`` (10,000) jobs are submitted, the queue is resumed and the time
  from the resume until all jobs are seen succeeded (a count polled every 20 ms) gives jobs/s.
  Variants: ``plain`` (``item`` jobs, ``store.enqueue`` in chunks of 1,000), ``batch`` (the same
  jobs as one ``submit_batch``) and ``keyed`` (``item_keyed``: a ``concurrency_key`` limit with
  100 keys and concurrency 1,000, which never binds, submitted like ``plain``). Their order
  rotates between runs. Reported: jobs/s, worker CPU per job, ratios batch / plain and
  keyed / plain.

    .venv/bin/python bench/batches.py [--runs 3] [--only submit|drain] [--url [postgresql://...]]

With ``--url`` the submit measurement runs on SQLite and on PostgreSQL, the drain on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from underway.tasks import SubmitOptions

POLL = 0.02
CHUNK = 1000
TIMEOUT = 180.0
QUEUE = "bench"
VARIANTS = ("plain", "batch", "keyed")


def items(n: int) -> list[dict[str, Any]]:
    return [{"url": f"https://host{i % 100}.example/{i}", "n": i} for i in range(n)]


@contextmanager
def store_url(postgres: str | None, tmp: Path, name: str) -> Iterator[str]:
    """A fresh store: a SQLite file in ``tmp``, or a new schema of the ``postgres`` database."""
    if postgres is None:
        yield common.sqlite_url(tmp / f"{name}.db")
    else:
        with common.postgres_schema(postgres) as url:
            yield url


# -- submit --------------------------------------------------------------------------------


async def submit_once(url: str, n: int) -> dict[str, Any]:
    from bench.apps import app

    app.settings = app.settings.replace(url=url)
    await app.open()
    try:
        task = app.get_task("item")
        await app.submit_batch(task, items(100), queue=QUEUE)  # warm-up: pydantic, connections
        batch_items = items(n)
        load = common.loadavg()
        start = time.perf_counter()
        batch = await app.submit_batch(task, batch_items, name="bench", queue=QUEUE)
        seconds = time.perf_counter() - start
        assert batch.total == n
        options = SubmitOptions(queue=QUEUE)
        start = time.perf_counter()
        if hasattr(app, "_batch_jobs"):
            app._batch_jobs(task, batch_items, options, "bench")
        else:  # a commit before it (for comparisons): what submit_batch did then
            [app.new_job(task, it, options, batch_id="bench") for it in batch_items]
        prepare = time.perf_counter() - start
    finally:
        await app.close()
    return {"load": load, "seconds": seconds, "prepare_seconds": prepare, "items_per_s": n / seconds}


def submit_main(args: Any) -> dict[str, list[dict[str, Any]]]:
    stores = {"sqlite": None} | ({"postgres": args.url} if args.url else {})
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in stores}
    for number in range(args.runs):
        for name, postgres in stores.items():
            with common.workdir("batches", args.keep) as tmp, store_url(postgres, tmp, "submit") as url:
                result = asyncio.run(submit_once(url, args.items))
            results[name].append(result)
            print(
                f"run {number + 1} {name}: submit_batch {result['seconds']:.3f} s"
                f" (building the jobs {result['prepare_seconds']:.3f} s) · load {result['load']}",
                flush=True,
            )
    print()
    common.table(
        ["store", f"submit_batch of {args.items} items, s", "building the jobs, s", "items/s"],
        [
            [
                name,
                common.spread([r["seconds"] for r in runs], "{:.3f}"),
                common.spread([r["prepare_seconds"] for r in runs], "{:.3f}"),
                common.spread([r["items_per_s"] for r in runs]),
            ]
            for name, runs in results.items()
        ],
    )
    return results


# -- drain ---------------------------------------------------------------------------------


def _count_succeeded(url: str) -> Callable[[], int]:
    """A function that counts the succeeded jobs with one cheap query on its own connection."""
    if common.is_postgres(url):
        import psycopg

        pg = psycopg.connect(url, autocommit=True)
        query = b"SELECT count(*) FROM underway_jobs WHERE status = 'succeeded'"
        return lambda: int(pg.execute(query).fetchone()[0])  # type: ignore[index]
    import sqlite3

    lite = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30, isolation_level=None)
    return lambda: int(lite.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0])


async def _submit(variant: str, n: int) -> None:
    from bench.apps import app

    if variant == "batch":
        await app.submit_batch("item", items(n), queue=QUEUE)
        return
    task = "item_keyed" if variant == "keyed" else "item"
    options = SubmitOptions(queue=QUEUE)
    all_items = items(n)
    for first in range(0, n, CHUNK):
        await app.store.enqueue([app.new_job(task, it, options) for it in all_items[first : first + CHUNK]])


async def drain_once(url: str, variant: str, args: Any, tmp: Path) -> dict[str, Any]:
    from bench.apps import app

    app.settings = app.settings.replace(url=url)
    await app.open()
    logs = [tmp / f"{variant}-worker-{i}.log" for i in range(args.workers)]
    argv = [*common.underway_command(), "--url", url, "--app", "bench.apps:app", "worker"]
    argv += ["--concurrency", str(args.concurrency)]
    procs = [common.start(argv, log, env={"UNDERWAY_URL": url}) for log in logs]
    try:
        deadline = time.monotonic() + 60
        while len(await app.store.workers(60)) < args.workers:
            common.check_alive(procs, logs)
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not register within 60 s")
            await asyncio.sleep(0.05)
        await app.pause_queue(QUEUE)
        await _submit(variant, args.jobs)
        count = _count_succeeded(url)
        cpu_before = sum(common.cpu_seconds(proc.pid) for proc in procs)
        load = common.loadavg()
        start = time.perf_counter()
        await app.resume_queue(QUEUE)
        deadline = time.monotonic() + TIMEOUT
        while count() < args.jobs:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all {args.jobs} jobs finished within {TIMEOUT:g} s")
            common.check_alive(procs, logs)
            await asyncio.sleep(POLL)
        seconds = time.perf_counter() - start
        cpu = sum(common.cpu_seconds(proc.pid) for proc in procs) - cpu_before
    finally:
        for proc in procs:
            common.stop(proc)
        await app.close()
    return {
        "load": load,
        "seconds": seconds,
        "jobs_per_s": args.jobs / seconds,
        "worker_cpu_us_per_job": cpu / args.jobs * 1e6,
    }


def drain_main(args: Any) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for number in range(args.runs):
        shift = number % len(VARIANTS)
        order = VARIANTS[shift:] + VARIANTS[:shift]
        result: dict[str, Any] = {"order": order}
        with common.workdir("batches", args.keep) as tmp, ExitStack() as stack:
            for variant in order:
                url = stack.enter_context(store_url(args.url, tmp, variant))
                result[variant] = asyncio.run(drain_once(url, variant, args, tmp))
        result["ratio_batch"] = result["batch"]["jobs_per_s"] / result["plain"]["jobs_per_s"]
        result["ratio_keyed"] = result["keyed"]["jobs_per_s"] / result["plain"]["jobs_per_s"]
        runs.append(result)
        print(
            f"run {number + 1}: "
            + " · ".join(
                f"{v} {result[v]['jobs_per_s']:.0f} jobs/s (load {result[v]['load']})" for v in order
            )
            + f" · batch/plain {result['ratio_batch']:.2f} · keyed/plain {result['ratio_keyed']:.2f}",
            flush=True,
        )
    print()
    common.table(
        ["variant", "jobs/s", "worker CPU per job, µs", "ratio to plain"],
        [
            [
                variant,
                common.spread([r[variant]["jobs_per_s"] for r in runs]),
                common.spread([r[variant]["worker_cpu_us_per_job"] for r in runs]),
                "1" if variant == "plain" else common.spread([r[f"ratio_{variant}"] for r in runs], "{:.2f}"),
            ]
            for variant in VARIANTS
        ],
    )
    return runs


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], default_runs=3)
    p.add_argument("--items", type=int, default=10_000, help="items of the submitted batch")
    p.add_argument("--jobs", type=int, default=10_000, help="jobs of each drain variant")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--concurrency", type=int, default=100, help="worker --concurrency")
    p.add_argument("--only", choices=("submit", "drain"), default=None, help="run one measurement")
    common.add_url_option(p)
    args = p.parse_args()
    common.install_cleanup()
    info = common.machine()
    extra = {"benchmark": f"{args.runs} runs; store: {'PostgreSQL' if args.url else 'SQLite'}"}
    if args.url:
        extra |= common.postgres_facts(args.url)
    common.print_machine(info, extra)
    payload: dict[str, Any] = {"machine": info}
    try:
        if args.only in (None, "submit"):
            payload["submit"] = submit_main(args)
        if args.only in (None, "drain"):
            print()
            payload["drain"] = drain_main(args)
    finally:
        common.stop_all()
    common.write_json(args.json, payload)


if __name__ == "__main__":
    main()
