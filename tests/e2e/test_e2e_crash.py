"""Workers that die or stall mid-job: the lease runs out, another worker re-runs the job as
its next attempt (on the job's crash budget, not its task's retries), and the stalled worker's
late writes are refused (DESIGN §3). A job that kills every worker that runs it fails with
``WorkerLost``."""

from __future__ import annotations

import fcntl
import os
import signal
from functools import partial
from pathlib import Path

import pytest
from e2e_support import Cli, Probe, Proc, Processes, assert_contiguous, status_events, wait_until

#: The same crashes on both stores.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)

#: Workers whose leases run out fast, and a sweeper that notices at once.
SHORT_LEASE = ("--lease-timeout", "1s", "--sweep-interval", "0.2s")


def running_with_progress(probe: Probe, job_id: str, attempt: int) -> bool:
    job = probe.job(job_id)
    return job.status.value == "running" and job.attempt == attempt and job.progress is not None


def stop_outside_a_write(proc: Proc, db_url: str, db_path: Path) -> None:
    """SIGSTOP ``proc`` at a moment it is in no transaction.

    A process stopped inside a write transaction would keep other writers waiting (SQLite's
    file lock; PostgreSQL's row locks, until the server's idle-in-transaction timeout): the
    test wants a worker that stalls, not one that holds the database.
    """
    in_transaction = (
        partial(_pg_in_transaction, db_url, proc.pid)
        if db_url.startswith("postgresql")
        else partial(_sqlite_locked, db_path)
    )
    for _ in range(100):
        proc.send(signal.SIGSTOP)
        if not in_transaction():
            return
        proc.send(signal.SIGCONT)
    pytest.fail(f"{proc.name} was in a transaction at every one of 100 tries")


def _sqlite_locked(db_path: Path) -> bool:
    fd = os.open(f"{db_path}-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _pg_in_transaction(db_url: str, pid: int) -> bool:
    """Whether a session of process ``pid`` (named ``underway-<pid>``) is mid-statement or
    mid-transaction."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state <> 'idle'",
            (f"underway-{pid}",),
        ).fetchone()
    return row is not None and row[0] > 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_job_of_a_killed_worker_runs_again_as_its_next_attempt(
    procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    # No retries (max_attempts 1) and the default crash budget: a lost worker is not the task's failure.
    job = probe.submit("hold", {"release": str(tmp_path / "never")}, max_attempts=1)
    first = procs.worker("worker-1", *SHORT_LEASE)
    wait_until(
        lambda: running_with_progress(probe, job.id, 1), 20, "attempt 1 to report progress", alive=[first]
    )

    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    second = procs.worker("worker-2", *SHORT_LEASE)
    done = wait_until(
        lambda: (j := probe.job(job.id)).terminal and j, 30, "the job to end in worker 2", alive=[second]
    )

    assert done.status.value == "succeeded"
    assert (done.attempt, done.max_attempts, done.crashes, done.crash_retries) == (2, 2, 1, 2)
    assert done.result == {"attempt": 2}
    events = probe.events(job.id)
    assert_contiguous(done, events)
    statuses = status_events(events)
    assert [(s["status"], s["attempt"]) for s in statuses] == [
        ("queued", 0),
        ("running", 1),
        ("queued", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
    assert statuses[2]["reason"] == "lease_expired"
    assert [s["status"] for s in statuses].count("succeeded") == 1
    assert [j.id for j in probe.jobs()] == [job.id]  # nothing lost, nothing duplicated


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_job_that_kills_every_worker_fails_with_worker_lost(procs: Processes, probe: Probe) -> None:
    job = probe.submit("kill_worker")
    assert job.crash_retries == 2  # the default
    runs = 0
    while not probe.job(job.id).terminal:
        runs += 1
        assert runs <= 4, "the job ran more often than its crash budget allows"
        worker = procs.worker(f"worker-{runs}", *SHORT_LEASE)
        wait_until(
            lambda w=worker: w.popen.poll() is not None or probe.job(job.id).terminal,
            30,
            f"worker {runs} to be killed by the job, or the job to end",
        )
        if worker.popen.poll() is None:  # it swept the last expired lease: the job failed
            worker.send(signal.SIGTERM)
            assert worker.wait(20) == 0, worker.output()
        else:
            assert worker.popen.returncode == -signal.SIGKILL, worker.output()

    failed = probe.job(job.id)
    assert (failed.status.value, failed.attempt, failed.crashes, failed.max_attempts) == ("failed", 3, 3, 3)
    assert failed.error is not None
    assert failed.error["type"] == "WorkerLost"
    assert "lost its worker 3 times, more than crash_retries=2 allows" in failed.error["message"]
    events = probe.events(job.id)
    assert_contiguous(failed, events)
    statuses = [(s["status"], s["attempt"], s.get("reason")) for s in status_events(events)]
    assert statuses == [
        ("queued", 0, None),
        ("running", 1, None),
        ("queued", 1, "lease_expired"),
        ("running", 2, None),
        ("queued", 2, "lease_expired"),
        ("running", 3, None),
        ("failed", 3, "lease_expired"),
    ]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_stalled_worker_cannot_write_after_another_took_its_job(
    procs: Processes, probe: Probe, tmp_path: Path, db_url: str
) -> None:
    release = tmp_path / "release"
    job = probe.submit("hold", {"release": str(release)})
    first = procs.worker("worker-1", *SHORT_LEASE)
    wait_until(
        lambda: running_with_progress(probe, job.id, 1), 20, "attempt 1 to report progress", alive=[first]
    )

    stop_outside_a_write(first, db_url, tmp_path / "e2e.db")
    second = procs.worker("worker-2", *SHORT_LEASE)
    done = wait_until(
        lambda: (j := probe.job(job.id)).terminal and j, 30, "attempt 2 to end in worker 2", alive=[second]
    )
    assert (done.status.value, done.attempt, done.result) == ("succeeded", 2, {"attempt": 2})
    settled = probe.events(job.id)

    release.touch()  # attempt 1 goes on to finish as soon as it runs again
    first.send(signal.SIGCONT)
    wait_until(
        lambda: any(
            end in first.stderr for end in ("refused the end of attempt 1", "another worker owns it")
        ),
        20,
        "worker 1 to give up the end of attempt 1",
    )
    first.send(signal.SIGTERM)
    assert first.wait(20) == 0, first.output()

    final = probe.job(job.id)
    events = probe.events(job.id)
    assert events == settled  # nothing of worker 1's got in after the job ended
    assert (final.status.value, final.attempt, final.result) == ("succeeded", 2, {"attempt": 2})
    assert_contiguous(final, events)
    statuses = status_events(events)
    assert [(s["status"], s["attempt"]) for s in statuses] == [
        ("queued", 0),
        ("running", 1),
        ("queued", 1),
        ("running", 2),
        ("succeeded", 2),
    ]
    takeover = next(e.seq for e in events if e.data.get("status") == "running" and e.data["attempt"] == 2)
    later = [e for e in events if e.seq > takeover]
    assert later, "attempt 2 wrote nothing"
    for event in later:
        assert event.data.get("attempt", 2) == 2, event
        assert event.data.get("message", "attempt 2") in ("attempt 2", "attempt 2 finishing"), event
    assert sum(e.ends_job for e in events) == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_an_answer_given_while_the_worker_is_dead_is_used_by_the_next_attempt(
    procs: Processes, probe: Probe, underway: Cli
) -> None:
    job = probe.submit("confirm")
    first = procs.worker("worker-1", *SHORT_LEASE)
    wait_until(lambda: probe.job(job.id).status.value == "waiting", 20, "the question", alive=[first])
    first.send(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL

    assert underway.ok("answer", job.id, "yes", app=False).split() == [job.id, "running"]
    second = procs.worker("worker-2", *SHORT_LEASE)
    done = wait_until(lambda: (j := probe.job(job.id)).terminal and j, 30, "the job to end", alive=[second])

    assert (done.status.value, done.attempt, done.result) == ("succeeded", 2, {"answer": "yes"})
    events = probe.events(job.id)
    assert_contiguous(done, events)
    assert [e.type.value for e in events].count("prompt") == 1  # attempt 2 did not ask again
    assert sum(e.ends_job for e in events) == 1
