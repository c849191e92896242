"""Many processes on one PostgreSQL database: API servers and workers that never talk to each
other but through the database, and the faults of a real deployment (a killed LISTEN
connection, a restarted database)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from e2e_support import APP, Probe, Proc, Processes, assert_contiguous, wait_until

import underway
from underway.events import Event, EventType

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(base: str) -> bool:
    try:
        with underway.Client(base, timeout=2.0) as client:
            client.health()
    except underway.ServerError:
        return False
    return True


def serve(procs: Processes, name: str) -> tuple[Proc, str]:
    """An ``underway server`` process, once it answers; its API's base URL."""
    port = free_port()
    proc = procs.start(name, "--app", APP, "server", "--host", "127.0.0.1", "--port", str(port))
    base = f"http://127.0.0.1:{port}/api"
    wait_until(lambda: healthy(base), 30, f"{name} to answer", alive=[proc])
    return proc, base


class Watcher:
    """Follows one job's SSE stream on a server in a thread, resuming across failures."""

    def __init__(self, base: str, job_id: str) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(base, job_id), daemon=True)
        self._thread.start()

    def _run(self, base: str, job_id: str) -> None:
        try:
            with underway.Client(base) as client:
                self.events.extend(client.watch(job_id))
        except BaseException as exc:  # shown by join()
            self.error = exc

    def join(self, timeout: float) -> list[Event]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the watch did not end within {timeout:g} s"
        assert self.error is None, repr(self.error)
        return self.events


def assert_watched_all(watched: list[Event], stored: list[Event]) -> None:
    """The client saw the job's events in order without duplicates, every non-progress event
    among them (live progress may be coalesced), and the terminal one last."""
    seqs = [e.seq for e in watched]
    assert seqs == sorted(set(seqs)), seqs
    seen = [(e.seq, e.type, e.data) for e in watched]  # times cross the wire in milliseconds
    kept = [(e.seq, e.type, e.data) for e in stored]
    assert [s for s in seen if s[1] is not EventType.PROGRESS] == [
        k for k in kept if k[1] is not EventType.PROGRESS
    ]
    assert seen[-1] == kept[-1]


def listen_backends(db_url: str, pid: int) -> list[int]:
    """Backend pids of the LISTEN connections of process ``pid``."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query ILIKE 'LISTEN%%'",
            (f"underway-{pid}",),
        ).fetchall()
    return [row[0] for row in rows]


def terminate(db_url: str, backends: list[int]) -> None:
    import psycopg

    with psycopg.connect(db_url) as conn:
        for backend in backends:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend,))


@pytest.mark.timeout(120)
def test_two_api_servers_and_three_workers_share_one_database(
    procs: Processes, probe: Probe, db_url: str
) -> None:
    workers = [procs.worker(f"worker-{n}", "--concurrency", "4") for n in range(3)]
    _, api_a = serve(procs, "server-a")
    _, api_b = serve(procs, "server-b")
    wait_until(lambda: len(probe.workers()) == 3, 30, "three workers to register", alive=workers)

    # Submitted through B, run by some worker, followed through A: every event, in order.
    with underway.Client(api_b) as client_b:
        jobs = [client_b.submit("sleep_for", {"seconds": 0.5}) for _ in range(6)]
    watchers = [Watcher(api_a, job.id) for job in jobs]
    for job, watcher in zip(jobs, watchers, strict=True):
        watched = watcher.join(60)
        stored = probe.events(job.id)
        assert_contiguous(probe.job(job.id), stored)
        assert_watched_all(watched, stored)
        assert stored[-1].data["status"] == "succeeded"
    assert len({probe.events(job.id)[1].data.get("attempt") for job in jobs}) == 1

    # A cancel sent to B stops a job that runs on whichever worker claimed it.
    long = probe.submit("sleep_for", {"seconds": 60.0})
    wait_until(lambda: probe.job(long.id).status.value == "running", 30, "the long job to start")
    with underway.Client(api_b) as client_b:
        client_b.cancel(long.id)
    ended = wait_until(
        lambda: (job := probe.job(long.id)).terminal and job, 15, "the cancel to stop the job", alive=workers
    )
    assert ended.status.value == "cancelled"
    assert ended.attempt == 1


@pytest.mark.timeout(180)
def test_eight_workers_race_over_ten_thousand_jobs(procs: Processes, probe: Probe, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    submitted = {job.id for job in probe.submit_many("record", {"out_dir": str(runs)}, 10_000)}

    workers = [procs.worker(f"worker-{n}", "--burst", "--concurrency", "8") for n in range(8)]
    for worker in workers:
        assert worker.wait(150) == 0, worker.output()
        assert "Traceback" not in worker.stderr, worker.output()

    ran = Counter(line for path in runs.iterdir() for line in path.read_text().split())
    duplicates = {job_id: n for job_id, n in ran.items() if n > 1}
    lost = submitted - set(ran)
    assert not duplicates, f"{len(duplicates)} jobs ran more than once, e.g. {list(duplicates)[:5]}"
    assert not lost, f"{len(lost)} jobs never ran, e.g. {sorted(lost)[:5]}"
    assert set(ran) == submitted
    assert len(list(runs.iterdir())) > 1, "one worker process ran every job"

    jobs = probe.jobs()
    assert len(jobs) == 10_000
    assert Counter(job.status.value for job in jobs) == {"succeeded": 10_000}
    assert all(job.attempt == 1 and job.result == job.id for job in jobs)
    by_job: defaultdict[str, list[Event]] = defaultdict(list)
    for event in probe.all_events():
        by_job[event.job_id].append(event)
    for job in jobs:
        assert [e.data["status"] for e in by_job[job.id]] == ["queued", "running", "succeeded"], job.id


@pytest.mark.timeout(120)
def test_killed_listen_connections_delay_but_lose_nothing(
    procs: Processes, probe: Probe, db_url: str
) -> None:
    worker = procs.worker("worker", "--concurrency", "2")
    server, api = serve(procs, "server")
    wait_until(lambda: probe.workers(), 30, "the worker to register", alive=[worker])
    for proc in (worker, server):
        backends = wait_until(lambda p=proc: listen_backends(db_url, p.pid), 30, f"{proc.name} to LISTEN")
        terminate(db_url, backends)

    job = probe.submit("sleep_for", {"seconds": 0.3})
    watcher = Watcher(api, job.id)
    watched = watcher.join(60)  # the worker started it, and the server streamed it, anyway
    stored = probe.events(job.id)
    assert_watched_all(watched, stored)
    assert stored[-1].data["status"] == "succeeded"
    for proc in (worker, server):
        wait_until(lambda p=proc: listen_backends(db_url, p.pid), 30, f"{proc.name} to LISTEN again")
    assert "reconnecting" in worker.stderr


def restart_postgres() -> None:
    """Restart the machine's PostgreSQL cluster (Debian's ``pg_ctlcluster``)."""
    tool = shutil.which("pg_ctlcluster")
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if tool is None or not clusters or os.geteuid() != 0:
        reason = "restarting PostgreSQL needs root and Debian's pg_ctlcluster"
        if os.environ.get("CI") == "true":
            pytest.fail(f"under CI=true this test must run: {reason}")
        pytest.skip(reason)
    subprocess.run(
        [tool, "--skip-systemctl-redirect", clusters[-1], "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.timeout(180)
def test_workers_and_servers_recover_from_a_database_restart(
    procs: Processes, probe: Probe, db_url: str
) -> None:
    workers = [procs.worker(f"worker-{n}", "--concurrency", "4") for n in range(2)]
    _, api = serve(procs, "server")
    wait_until(lambda: len(probe.workers()) == 2, 30, "the workers to register", alive=workers)
    before = [probe.submit("sleep_for", {"seconds": 1.5}) for _ in range(6)]
    wait_until(
        lambda: sum(probe.job(job.id).status.value == "running" for job in before) >= 4,
        30,
        "jobs to run",
        alive=workers,
    )
    watcher = Watcher(api, before[0].id)

    restart_postgres()
    after = [probe.submit("sleep_for", {"seconds": 0.2}) for _ in range(4)]
    for job in [*before, *after]:
        ended = wait_until(
            lambda j=job: (found := probe.job(j.id)).terminal and found, 90, f"{job.id} to end", alive=workers
        )
        assert ended.status.value == "succeeded", ended
        assert_contiguous(ended, probe.events(job.id))
    assert_watched_all(watcher.join(60), probe.events(before[0].id))
