"""The pieces bench/chaos.py's scenarios share: underway processes on the chaos app, the audit
of a store after a run, a private PostgreSQL cluster, a small tmpfs.

Nothing here restarts or fills anything but what it created itself: the PostgreSQL cluster is a
new one in a temporary folder on a free port, the tmpfs a new mount in a temporary folder.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import common, serving

APP = "bench.chaos_apps:app"
TERMINAL = ("succeeded", "failed", "cancelled")


class Unavailable(RuntimeError):
    """The machine cannot run this scenario (no PostgreSQL binaries, mounting not allowed)."""


# -- processes ---------------------------------------------------------------------------------


def underway_argv(url: str, *command: str) -> list[str]:
    return [*common.underway_command(), "--url", url, "--app", APP, *command]


def start_worker(url: str, log: Path, concurrency: int, flags: Sequence[str] = ()) -> Any:
    argv = underway_argv(url, "worker", "--concurrency", str(concurrency), *flags)
    return common.start(argv, log, env={"UNDERWAY_URL": url})


def start_server(url: str, port: int, log: Path) -> Any:
    """``underway server`` on 127.0.0.1:port with the open-file limit raised (as bench/serving.py)."""
    limit = serving.nofile_limit()
    argv = [f"--nofile={limit}:{limit}", "--"]
    argv += underway_argv(url, "server", "--host", "127.0.0.1", "--port", str(port))
    return common.start(["prlimit", *argv], log, env={"UNDERWAY_URL": url})


def kill(proc: Any) -> None:
    """SIGKILL the process group, reap it, forget it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    common.stop(proc)


# -- the audit ---------------------------------------------------------------------------------


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``; ``{jobs}`` and ``{events}`` name the store's tables (PostgreSQL's
    have an ``underway_`` prefix)."""
    prefix = "underway_" if common.is_postgres(url) else ""
    sql = sql.format(jobs=f"{prefix}jobs", events=f"{prefix}events")
    if common.is_postgres(url):
        import psycopg

        with psycopg.connect(url) as conn:
            return [tuple(row) for row in conn.execute(sql.encode()).fetchall()]
    with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
        return list(conn.execute(sql).fetchall())


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def stored_events(url: str, job_ids: Iterable[str] | None = None) -> dict[str, list[tuple[int, str, Any]]]:
    """Every stored event (seq, type, data) by job, in seq order."""
    where = ""
    if job_ids is not None:
        where = "WHERE job_id IN (" + ",".join(f"'{j}'" for j in job_ids) + ")"
    by_job: defaultdict[str, list[tuple[int, str, Any]]] = defaultdict(list)
    for job_id, seq, kind, data in rows(
        url, "SELECT job_id, seq, type, data FROM {events} " + where + " ORDER BY id"
    ):
        by_job[job_id].append((int(seq), kind, _json(data)))
    for events in by_job.values():
        events.sort(key=lambda e: e[0])
    return by_job


def audit(url: str, expected: Iterable[str] = ()) -> dict[str, Any]:
    """What a run left in the store: lost jobs, jobs finished twice, gaps and duplicates in seq.

    Lost: a submitted job that is not stored, has not ended, was cancelled (nobody cancels in
    the suite) or failed for any reason but ``WorkerLost`` (counted apart: the crash budget
    spent). Finished twice: more than one terminal status event (the suite retries nothing by
    hand, so there is no legitimate second one). Events: per job, the seqs must be exactly
    1..last_seq, each once.
    """
    jobs = {
        job_id: (status, int(last_seq), int(crashes), _json(error))
        for job_id, status, last_seq, crashes, error in rows(
            url, "SELECT id, status, last_seq, crashes, error FROM {jobs}"
        )
    }
    events = stored_events(url)
    lost = sorted(set(expected) - set(jobs))
    worker_lost, twice, gaps = [], [], []
    missing = duplicated = 0
    for job_id, (status, last_seq, _, error) in jobs.items():
        if status == "failed" and (error or {}).get("type") == "WorkerLost":
            worker_lost.append(job_id)
        elif status != "succeeded":
            lost.append(job_id)
        seqs = [seq for seq, _, _ in events.get(job_id, [])]
        gone = set(range(1, last_seq + 1)) - set(seqs)
        extra = len(seqs) - len(set(seqs)) + sum(1 for s in set(seqs) if not 1 <= s <= last_seq)
        missing += len(gone)
        duplicated += extra
        if gone or extra:
            gaps.append(job_id)
        ends = [e for e in events.get(job_id, []) if e[1] == "status" and e[2].get("status") in TERMINAL]
        if len(ends) > 1:
            twice.append(job_id)
    crashes = [c for _, _, c, _ in jobs.values()]
    return {
        "jobs": len(jobs),
        "statuses": dict(Counter(status for status, _, _, _ in jobs.values())),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "worker_lost": len(worker_lost),
        "worker_lost_ids": worker_lost[:10],
        "finished_twice": len(twice),
        "finished_twice_ids": twice[:10],
        "events_missing": missing,
        "events_duplicated": duplicated,
        "jobs_with_event_faults": len(gaps),
        "event_fault_ids": gaps[:10],
        "events": sum(len(e) for e in events.values()),
        "crashes": sum(crashes),
        "jobs_rerun": sum(1 for c in crashes if c),
        "most_crashes": max(crashes, default=0),
    }


# -- a private PostgreSQL cluster -------------------------------------------------------------


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and pg_ctl (or on PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise Unavailable("no initdb/pg_ctl (looked in /usr/lib/postgresql/*/bin and on PATH)")


class PrivateCluster:
    """A PostgreSQL cluster of our own: ``initdb`` in a temporary folder, on a free port.

    As root, initdb refuses to run: the folder then belongs to the ``postgres`` user (or
    ``nobody``) and every PostgreSQL command runs as that user through ``runuser``.
    """

    def __init__(self, folder: Path) -> None:
        self.bin = postgres_bin()
        self.folder = folder
        self.data = folder / "data"
        self.port = serving.free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = _existing_user("postgres", "nobody")
            account = pwd.getpwnam(self.user)
            os.chown(folder, account.pw_uid, account.pw_gid)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/chaos"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        argv = [str(self.bin / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        # Into a file, not a pipe: a postmaster that pg_ctl starts keeps its descriptors.
        with open(self.folder / "tools.log", "ab") as out:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=self.folder
            )
        if done.returncode:
            log = (self.folder / "tools.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {log}")

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "postgres.log"),
            "-w",
            "-o",
            options,
            "start",
        )
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(b"CREATE DATABASE chaos")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, the server comes back on the same port."""
        log = str(self.folder / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "fast", "-w", "-t", "60", "restart")

    def terminate_underway(self) -> int:
        """``pg_terminate_backend`` every session an underway process opened; how many."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            found = conn.execute(
                b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                b" WHERE application_name LIKE 'underway-%' AND pid <> pg_backend_pid()"
            ).fetchall()
        return len(found)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")


def _existing_user(*names: str) -> str:
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise Unavailable(f"initdb refuses root and there is no {' or '.join(names)} user to run it")


@contextmanager
def private_postgres(keep: bool = False) -> Iterator[PrivateCluster]:
    folder = Path(tempfile.mkdtemp(prefix="underway-chaos-pg-"))
    try:
        cluster = PrivateCluster(folder)
        try:
            cluster.create()
            yield cluster
        finally:
            cluster.stop()
    finally:
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


# -- a small tmpfs -----------------------------------------------------------------------------


@contextmanager
def small_tmpfs(size_kib: int) -> Iterator[Path]:
    """A new tmpfs of ``size_kib`` KiB mounted on a temporary folder (needs root)."""
    folder = Path(tempfile.mkdtemp(prefix="underway-chaos-disk-"))
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise Unavailable(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def truncate_wal(url: str) -> bool:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: whether the WAL was emptied (readers may hold it)."""
    with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0


def fill(folder: Path) -> int:
    """Write a ballast file until the file system is full; its size in bytes."""
    written = 0
    block = b"\0" * 65536
    with open(folder / "ballast", "wb", buffering=0) as ballast:
        while True:
            try:
                written += ballast.write(block)
            except OSError:
                break
        while True:  # the last partial block
            try:
                written += ballast.write(b"\0" * 512)
            except OSError:
                return written
