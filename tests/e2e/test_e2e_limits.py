"""Per-key concurrency, rate limits and queue controls hold across worker processes."""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
from e2e_support import Probe, Proc, Processes, wait_until

#: The same limits on both stores.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)

T = TypeVar("T")


class Span(NamedTuple):
    """One run of a job, as the task body recorded it (``tests/e2e/apps/e2e_tasks.py`` ``_span``)."""

    job_id: str
    key: str
    start: float
    end: float
    pid: int


def spans(out_dir: Path) -> list[Span]:
    found = []
    for path in out_dir.glob("*.txt"):
        for line in path.read_text().splitlines():
            job_id, key, start, end = line.split()
            found.append(Span(job_id, key, float(start), float(end), int(path.stem)))
    return found


def most_at_once(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant (one that ends as another starts: no overlap)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def run(probe: Probe, coro: Coroutine[Any, Any, T]) -> T:
    """Run one App call on the probe's loop (where its store is open)."""
    return probe._runner.run(coro)


def succeeded(probe: Probe, count: int) -> bool:
    return len(probe.jobs(status=["succeeded"])) == count


def start_workers(procs: Processes, probe: Probe, count: int) -> list[Proc]:
    """``count`` workers (``--concurrency 8``), once every one is registered: all compete."""
    workers = [procs.worker(f"worker-{n}", "--concurrency", "8") for n in range(count)]
    wait_until(lambda: len(probe.workers()) == count, 30, "the workers to register", alive=workers)
    return workers


def stop(workers: Sequence[Proc]) -> None:
    for worker in workers:
        worker.send(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(20) == 0, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_per_key_concurrency_holds_across_four_worker_processes(
    procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = start_workers(procs, probe, 4)
    keys = ("a.example", "b.example", "c.example")
    items = [{"out_dir": str(runs), "key": keys[n % 3]} for n in range(120)]
    batch = run(probe, probe.app.submit_batch("keyed_span", items))
    submitted = {job.id for job in probe.jobs()}
    assert len(submitted) == batch.total == 120

    wait_until(lambda: succeeded(probe, 120), 45, "every job to succeed", alive=workers)
    stop(workers)

    ran = spans(runs)
    assert Counter(s.job_id for s in ran) == Counter(submitted), "a job ran twice or not at all"
    assert len({s.pid for s in ran}) > 1, "one worker process ran every job"
    by_key: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in ran:
        by_key[s.key].append((s.start, s.end))
    assert {key: most_at_once(intervals) for key, intervals in by_key.items()} == dict.fromkeys(keys, 2)
    assert all(job.limit_key in keys and job.attempt == 1 for job in probe.jobs())


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_rate_limit_holds_in_every_one_second_window(procs: Processes, probe: Probe, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    workers = start_workers(procs, probe, 3)
    run(probe, probe.app.submit_batch("rated", [{"out_dir": str(runs)}] * 25))

    wait_until(lambda: succeeded(probe, 25), 45, "every job to succeed", alive=workers)
    stop(workers)

    assert Counter(s.job_id for s in spans(runs)) == Counter(job.id for job in probe.jobs())
    # The store counts a start when it claims the job, at the claim's time: started_at.
    starts = sorted(job.started_at for job in probe.jobs() if job.started_at is not None)
    assert len(starts) == 25
    # Any 6 consecutive starts span at least the 1 s window (the store counts `at > now - 1`).
    closest = min(later - first for first, later in zip(starts, starts[5:], strict=False))
    assert closest >= 1.0 - 1e-6, f"6 starts within {closest:.3f} s: {starts}"
    # The limit bound: 25 starts at 5/s need at least 4 s; far more would mean it over-throttles.
    assert 4.0 - 1e-6 <= starts[-1] - starts[0] < 12.0, starts


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_queue_concurrency_holds_across_three_worker_processes(
    procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    assert run(probe, probe.app.limit_queue("q", 3)).concurrency == 3
    workers = start_workers(procs, probe, 3)
    run(probe, probe.app.submit_batch("span", [{"out_dir": str(runs)}] * 40, queue="q"))
    unlimited = probe.submit_many("span", {"out_dir": str(runs), "key": "free"}, 10)

    wait_until(lambda: succeeded(probe, 50), 45, "every job to succeed", alive=workers)
    stop(workers)

    ran = spans(runs)
    assert Counter(s.job_id for s in ran) == Counter(job.id for job in probe.jobs())
    in_q = [(s.start, s.end) for s in ran if s.key == "-"]
    assert len(in_q) == 40
    assert most_at_once(in_q) == 3
    assert {job.queue for job in unlimited} == {"default"}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_paused_queue_starts_nothing_until_resumed(procs: Processes, probe: Probe, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    assert run(probe, probe.app.pause_queue("held")).paused
    workers = start_workers(procs, probe, 2)
    # Higher priority and older: a worker that ignored the pause would take these first.
    held = {j.id for j in probe.submit_many("record", {"out_dir": str(runs)}, 20, queue="held", priority=5)}
    free = {j.id for j in probe.submit_many("record", {"out_dir": str(runs)}, 20, queue="free")}

    wait_until(lambda: succeeded(probe, 20), 30, "the free queue's jobs to succeed", alive=workers)
    assert {job.id for job in probe.jobs(status=["succeeded"])} == free
    assert {job.id for job in probe.jobs(status=["queued"])} == held
    queues = {info.name: info for info in run(probe, probe.app.queues())}
    assert queues["held"].paused
    assert queues["held"].counts.get("queued") == 20

    assert not run(probe, probe.app.resume_queue("held")).paused
    wait_until(lambda: succeeded(probe, 40), 30, "the resumed queue's jobs to succeed", alive=workers)
    stop(workers)
    ran = Counter(line for path in runs.iterdir() for line in path.read_text().split())
    assert ran == Counter(held | free)
