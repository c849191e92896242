"""SIGTERM drains a worker: it stops claiming, lets running jobs finish within
``--shutdown-grace``, hands back the ones that don't, and exits 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from e2e_support import APP, Cli, Probe, Proc, Processes, assert_contiguous, status_events, wait_until


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_lets_the_running_job_finish_and_claims_no_more(procs: Processes, probe: Probe) -> None:
    running = probe.submit("sleep_for", {"seconds": 1.0}, priority=10)
    waiting = probe.submit("sleep_for", {"seconds": 0.1})
    worker = procs.worker("worker", "--concurrency", "1")
    wait_until(
        lambda: probe.job(running.id).progress is not None, 20, "the first job to start", alive=[worker]
    )
    assert probe.job(running.id).status.value == "running"

    worker.send(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()

    finished = probe.job(running.id)
    assert (finished.status.value, finished.attempt, finished.result) == ("succeeded", 1, 1.0)
    assert_contiguous(finished, probe.events(running.id))
    left = probe.job(waiting.id)
    assert (left.status.value, left.attempt) == ("queued", 0)
    assert [e.type.value for e in probe.events(waiting.id)] == ["status"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_hands_back_a_job_longer_than_the_shutdown_grace(
    procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    job = probe.submit("hold", {"release": str(release)})
    worker = procs.worker("worker-1", "--shutdown-grace", "0.5s")
    wait_until(lambda: probe.job(job.id).progress is not None, 20, "the job to start", alive=[worker])

    worker.send(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()
    handed_back = probe.job(job.id)
    assert (handed_back.status.value, handed_back.attempt) == ("queued", 1)
    last = status_events(probe.events(job.id))[-1]
    assert (last["status"], last["attempt"], last["reason"]) == ("queued", 1, "worker_shutdown")

    release.touch()
    later = procs.worker("worker-2", "--burst")
    assert later.wait(30) == 0, later.output()
    done = probe.job(job.id)
    assert (done.status.value, done.attempt, done.result) == ("succeeded", 2, {"attempt": 2})
    events = probe.events(job.id)
    assert_contiguous(done, events)
    assert [(s["status"], s["attempt"]) for s in status_events(events)] == [
        ("queued", 0),
        ("running", 1),
        ("queued", 1),
        ("running", 2),
        ("succeeded", 2),
    ]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_second_sigterm_hands_the_jobs_back_at_once(procs: Processes, probe: Probe, tmp_path: Path) -> None:
    job = probe.submit("hold", {"release": str(tmp_path / "never")})
    worker = procs.start("worker", "-v", "--app", APP, "worker", "--shutdown-grace", "50s")
    wait_until(lambda: probe.job(job.id).progress is not None, 20, "the job to start", alive=[worker])

    worker.send(signal.SIGTERM)
    wait_until(
        lambda: "waiting up to 50s for 1 jobs" in worker.stderr, 20, "the drain to begin", alive=[worker]
    )
    assert probe.job(job.id).status.value == "running"
    worker.send(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()

    handed_back = probe.job(job.id)
    assert (handed_back.status.value, handed_back.attempt) == ("queued", 1)
    assert status_events(probe.events(job.id))[-1]["reason"] == "worker_shutdown"


# -- jobs waiting for an answer ----------------------------------------------------------------


def wait_for_question(procs: Processes, probe: Probe, *flags: str) -> tuple[Proc, str]:
    job = probe.submit("confirm")
    worker = procs.worker("worker-1", *flags)
    wait_until(lambda: probe.job(job.id).status.value == "waiting", 20, "the question", alive=[worker])
    return worker, job.id


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_hands_back_a_job_waiting_for_an_answer(
    procs: Processes, probe: Probe, underway: Cli
) -> None:
    worker, job_id = wait_for_question(procs, probe, "--shutdown-grace", "0.5s")
    worker.send(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()
    handed_back = probe.job(job_id)
    assert (handed_back.status.value, handed_back.prompt) == ("queued", None)

    later = procs.worker("worker-2")
    wait_until(lambda: probe.job(job_id).status.value == "waiting", 20, "the question again", alive=[later])
    underway.ok("answer", job_id, "yes", app=False)
    done = wait_until(lambda: (j := probe.job(job_id)).terminal and j, 20, "the job to end", alive=[later])
    assert (done.status.value, done.attempt, done.result) == ("succeeded", 2, {"answer": "yes"})
    events = probe.events(job_id)
    assert_contiguous(done, events)
    assert [(s["status"], s["attempt"]) for s in status_events(events)] == [
        ("queued", 0),
        ("running", 1),
        ("waiting", 1),
        ("queued", 1),
        ("running", 2),
        ("waiting", 2),
        ("running", 2),
        ("succeeded", 2),
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt", ["cancel", "sigterm"])
def test_interrupting_a_question_logs_no_error(
    procs: Processes, probe: Probe, underway: Cli, interrupt: str
) -> None:
    worker, job_id = wait_for_question(procs, probe, "--shutdown-grace", "0.5s")
    if interrupt == "cancel":
        underway.ok("cancel", job_id, app=False)
        wait_until(lambda: probe.job(job_id).terminal, 20, "the job to stop", alive=[worker])
    worker.send(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()

    assert probe.job(job_id).status.value == ("cancelled" if interrupt == "cancel" else "queued")
    assert worker.stderr == ""  # no "Future exception was never retrieved" from the interrupted question


# -- sync tasks stuck in their threads ---------------------------------------------------------


def sigterm_a_stuck_nap(procs: Processes, probe: Probe, task: str) -> tuple[Proc, str, float]:
    """Start a worker with a 1 s shutdown grace on a sync task stuck for 60 s, SIGTERM it; the
    worker, the job's id and the time of the signal."""
    job = probe.submit(task, {"seconds": 60.0})
    worker = procs.worker("worker", "--shutdown-grace", "1s")
    wait_until(lambda: probe.job(job.id).progress is not None, 20, "the nap to start", alive=[worker])
    worker.send(signal.SIGTERM)
    return worker, job.id, time.monotonic()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_stuck_sync_task_does_not_keep_the_worker_alive_past_the_grace(
    procs: Processes, probe: Probe
) -> None:
    worker, job_id, signalled = sigterm_a_stuck_nap(procs, probe, "nap")
    assert worker.wait(20) == 0, worker.output()
    assert time.monotonic() - signalled < 1.0 + 3.0, worker.output()  # the grace, then at once

    handed_back = probe.job(job_id)
    assert (handed_back.status.value, handed_back.attempt, handed_back.max_attempts) == ("queued", 1, 2)
    last = status_events(probe.events(job_id))[-1]
    assert (last["status"], last["reason"]) == ("queued", "worker_shutdown")
    assert f"abandoning 1 sync task threads that still run jobs {job_id}" in worker.stderr
    assert "exiting now" not in worker.stderr  # the abandoned thread itself held nothing


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_threads_a_stuck_task_started_do_not_keep_the_worker_alive_either(
    procs: Processes, probe: Probe
) -> None:
    worker, job_id, signalled = sigterm_a_stuck_nap(procs, probe, "nap_in_thread")
    assert worker.wait(20) == 0, worker.output()
    # The grace, then EXIT_TIMEOUT (2 s) for the process to end by itself, then os._exit.
    assert time.monotonic() - signalled < 1.0 + 2.0 + 3.0, worker.output()
    assert probe.job(job_id).status.value == "queued"
    assert "(threads e2e-sleeper; abandoned jobs " + job_id + "): exiting now" in worker.stderr
