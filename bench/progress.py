"""The cost of ``ctx.progress()`` in a tight loop, and how soon a watcher sees the final value.

Each run, on a fresh SQLite file per variant, one job of ``calls`` (default 2,000,000)
``ctx.progress(i + 1, calls)`` calls, timed inside the task (bench/apps.py ``spin_timed``: a
real Context of a real job in a running worker), which records ``time.time()`` right after its
last call. Before that, the task alternates 5 blocks of calls/10 progress calls and of calls
to a no-op method: the fastest of each (which a busy machine disturbs less) gives the cost of
``progress()`` itself, in ns per call. A watcher (``app.watch(job_id)`` in the benchmark
process) records when it receives the progress event with ``current == total``.

Variants: the worker in the benchmark process (``Worker(app).run()`` on the same event loop as
the watcher) or in a subprocess (``underway worker``); the task async (``spin_timed``: the
loop blocks the event loop, so the final value goes out with the end of the job) or sync
(``spin_timed_sync``: runs in a worker thread while the flusher writes every 50 ms).

Targets: >= 1,000,000 calls/s; the watcher sees the final value within 50 ms of the last call.

    .venv/bin/python bench/progress.py [--runs 5] [--calls 2000000]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from underway import EventType, Worker

#: name → (worker in this process, task)
VARIANTS: dict[str, tuple[bool, str]] = {
    "in-process, async task": (True, "spin_timed"),
    "in-process, sync task": (True, "spin_timed_sync"),
    "subprocess, async task": (False, "spin_timed"),
    "subprocess, sync task": (False, "spin_timed_sync"),
}
TIMEOUT = 120.0


async def watch(job_id: str) -> dict[str, Any]:
    from bench.apps import app

    progress_events = 0
    final_seen_at = None
    arrivals: list[float] = []
    async for event in app.watch(job_id):
        now = time.time()
        if event.type is EventType.PROGRESS:
            progress_events += 1
            arrivals.append(now)
            if final_seen_at is None and event.data.get("current") == event.data.get("total"):
                final_seen_at = now
        if event.ends_job:
            end_seen_at = now
            status = event.data["status"]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return {
        "status": status,
        "progress_events_seen": progress_events,
        "final_seen_at": final_seen_at,
        "end_seen_at": end_seen_at,
        "max_gap_ms": max(gaps) * 1000 if gaps else None,
        "mean_gap_ms": (arrivals[-1] - arrivals[0]) * 1000 / len(gaps) if gaps else None,
    }


async def measure(tmp: Path, name: str, calls: int) -> dict[str, Any]:
    from bench.apps import app

    in_process, task_name = VARIANTS[name]
    slug = name.replace(", ", "-").replace(" ", "-")
    db = tmp / f"{slug}.db"
    url = common.sqlite_url(db)
    app.settings = app.settings.replace(url=url)
    await app.open()
    worker = None
    working = None
    proc = None
    log = tmp / f"{slug}-worker.log"
    try:
        if in_process:
            worker = Worker(app)
            working = asyncio.create_task(worker.run())
        else:
            proc = common.start(
                [*common.underway_command(), "--url", url, "--app", "bench.apps:app", "worker"],
                log,
                env={"UNDERWAY_URL": url},
            )
        deadline = time.monotonic() + 60
        while not await app.store.workers(60):
            if proc is not None:
                common.check_alive([proc], [log])
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not register within 60 s")
            await asyncio.sleep(0.02)
        load = common.loadavg()
        job = await app.submit(task_name, {"calls": calls})
        seen = await asyncio.wait_for(watch(job.id), TIMEOUT)
        done = await app.get(job.id)
        written = sum(1 for e in await app.events(job.id, limit=1_000_000) if e.type is EventType.PROGRESS)
    finally:
        if worker is not None and working is not None:
            worker.stop()
            await working
        if proc is not None:
            common.stop(proc)
        await app.close()
    if seen["status"] != "succeeded" or not isinstance(done.result, dict):
        raise RuntimeError(f"{name}: the job ended {seen['status']}: {done.error}")
    result = done.result
    final = seen["final_seen_at"]
    return {
        "load": load,
        "calls_per_s": result["calls_per_s"],
        "ns_per_call": result["ns_per_call"],
        "best_block_calls_per_s": result["best_block_calls_per_s"],
        "loop_seconds": result["seconds"],
        "final_after_ms": (final - result["last_call_at"]) * 1000 if final is not None else None,
        "end_after_ms": (seen["end_seen_at"] - result["last_call_at"]) * 1000,
        "progress_events_written": written,
        "progress_events_seen": seen["progress_events_seen"],
        "max_gap_ms": seen["max_gap_ms"],
        "mean_interval_ms": seen["mean_gap_ms"],
    }


async def one_run(args: Any) -> dict[str, Any]:
    with common.workdir("progress", args.keep) as tmp:
        return {name: await measure(tmp, name, args.calls) for name in VARIANTS}


def fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2_000_000, help="progress calls per job")
    args = p.parse_args()
    common.install_cleanup()
    info = common.machine()
    common.print_machine(
        info,
        {
            "benchmark": f"{args.calls:,} ctx.progress() calls in one job per variant, {args.runs} runs",
            "targets": ">= 1,000,000 calls/s; final value seen within 50 ms of the last call",
        },
    )
    runs: list[dict[str, Any]] = []
    try:
        for number in range(args.runs):
            result = asyncio.run(one_run(args))
            runs.append(result)
            line = ", ".join(
                f"{name} {r['calls_per_s'] / 1e6:.2f} M/s seen +{fmt(r['final_after_ms'], '{:.1f}')} ms"
                for name, r in result.items()
            )
            print(f"run {number + 1}: {line}", flush=True)
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
                    f"{r['calls_per_s'] / 1e6:.2f}",
                    f"{r['best_block_calls_per_s'] / 1e6:.2f}",
                    f"{r['ns_per_call']:.0f}",
                    fmt(r["final_after_ms"], "{:.1f}"),
                    f"{r['end_after_ms']:.1f}",
                    r["progress_events_written"],
                    r["progress_events_seen"],
                    fmt(r["mean_interval_ms"], "{:.0f}"),
                    fmt(r["max_gap_ms"], "{:.0f}"),
                ]
            )
    common.table(
        [
            "run",
            "variant",
            "load 1/5/15",
            "M calls/s",
            "best block",
            "ns/call",
            "final seen +ms",
            "end seen +ms",
            "progress written",
            "seen",
            "mean gap ms",
            "max gap ms",
        ],
        rows,
    )
    summary: dict[str, dict[str, list[float]]] = {}
    print(f"\nmedian of {len(runs)} runs (min-max):")
    for name in VARIANTS:
        figures = {
            key: [r[name][key] for r in runs if r[name][key] is not None]
            for key in ("calls_per_s", "ns_per_call", "final_after_ms", "end_after_ms")
        }
        summary[name] = figures
        millions = [v / 1e6 for v in figures["calls_per_s"]]
        print(
            f"  {name:<23} {common.spread(millions, '{:.2f}')} M calls/s"
            f"  ({common.spread(figures['ns_per_call'])} ns/call over a no-op method call)"
            f"  final value seen +{common.spread(figures['final_after_ms'], '{:.1f}')} ms"
        )
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
