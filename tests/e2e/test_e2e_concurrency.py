"""Several worker processes on one SQLite file: every job runs once and ends once."""

from __future__ import annotations

import signal
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from e2e_support import Probe, Processes, wait_until

#: The same crashes on both stores.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)

JOBS = 2_000
WORKERS = 4


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_four_worker_processes_run_each_of_2000_jobs_exactly_once(
    procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    submitted = {job.id for job in probe.submit_many("record", {"out_dir": str(runs)}, JOBS)}

    workers = [procs.worker(f"worker-{n}", "--burst", "--concurrency", "8") for n in range(WORKERS)]
    for worker in workers:
        assert worker.wait(50) == 0, worker.output()

    ran = Counter(line for path in runs.iterdir() for line in path.read_text().split())
    assert set(ran) == submitted
    assert set(ran.values()) == {1}, [job for job, n in ran.items() if n > 1][:10]
    assert len(list(runs.iterdir())) > 1, "one worker process ran every job"
    for worker in workers:
        assert "database is locked" not in worker.stderr, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()

    jobs = probe.jobs()
    assert len(jobs) == JOBS
    assert {job.status.value for job in jobs} == {"succeeded"}
    assert all(job.attempt == 1 and job.result == job.id for job in jobs)

    by_job = defaultdict(list)
    for event in probe.all_events():
        by_job[event.job_id].append(event)
    assert set(by_job) == submitted
    for job in jobs:
        events = by_job[job.id]
        assert [e.seq for e in events] == list(range(1, job.last_seq + 1)), job.id
        statuses = [e.data["status"] for e in events if e.type.value == "status"]
        assert statuses == ["queued", "running", "succeeded"], job.id


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_killing_one_of_three_busy_workers_loses_no_job(
    procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    count = 2_000
    submitted = {j.id for j in probe.submit_many("record", {"out_dir": str(runs)}, count, max_attempts=3)}
    short_lease = ("--lease-timeout", "1s", "--sweep-interval", "0.2s", "--concurrency", "8")
    workers = [procs.worker(f"worker-{n}", *short_lease) for n in range(3)]

    wait_until(lambda: len(list(runs.glob("*.txt"))) == 3, 30, "every worker to run jobs", alive=workers)
    victim, survivors = workers[0], workers[1:]
    victim.send(signal.SIGKILL)  # whatever it is doing: running jobs, writing, holding the lock
    assert victim.wait(10) == -signal.SIGKILL
    assert len(probe.jobs(status=["succeeded"])) < count, "the jobs were all done before the kill"
    wait_until(
        lambda: len(probe.jobs(status=["succeeded"])) == count, 45, "every job to succeed", alive=survivors
    )
    for worker in survivors:
        worker.send(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.output()
        assert "database is locked" not in worker.stderr, worker.output()

    ran = {line for path in runs.iterdir() for line in path.read_text().split()}
    assert ran == submitted
    by_job = defaultdict(list)
    for event in probe.all_events():
        by_job[event.job_id].append(event)
    for job in probe.jobs():
        events = by_job[job.id]
        assert [e.seq for e in events] == list(range(1, job.last_seq + 1)), job.id
        statuses = [(e.data["status"], e.data.get("reason")) for e in events if e.type.value == "status"]
        assert [s for s, _ in statuses].count("succeeded") == 1, (job.id, statuses)
        assert statuses[-1][0] == "succeeded"
        assert job.attempt == 1 or ("queued", "lease_expired") in statuses, (job.id, statuses)
