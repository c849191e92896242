"""Health that tells the truth, with real processes: a database file deleted or replaced under a
running ``underway server`` and ``underway worker`` (the server answers 503 naming the reason, the
worker exits non-zero saying why), a read-only database (``/healthz`` and ``underway doctor``),
and a PostgreSQL connection that cannot write."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import APP, Cli, Probe, Proc, Processes, wait_until
from needs import unavailable

from underway import Status

RESTART = "restart this process to open the file now at that path"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health(base: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{base}/healthz", timeout=5.0, trust_env=False)
    except httpx.TransportError:
        return None


def serve(procs: Processes, name: str, *flags: str, env: dict[str, str] | None = None) -> tuple[Proc, str]:
    """An ``underway server`` process, once it answers /healthz (200 or 503); its API's base URL."""
    port = free_port()
    proc = procs.start(name, "--app", APP, *flags, "server", "--port", str(port), env=env)
    base = f"http://127.0.0.1:{port}/api"
    wait_until(lambda: health(base), 30, f"{name} to answer", alive=[proc])
    return proc, base


def sqlite_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_lost_database_file_stops_the_worker_and_fails_health(
    how: str, procs: Processes, probe: Probe, underway: Cli, db_url: str, tmp_path: Path
) -> None:
    db = sqlite_path(db_url)
    server, base = serve(procs, "server")
    worker = procs.worker("worker")
    job = probe.submit("greet", {"name": "before"})
    wait_until(lambda: probe.job(job.id).status is Status.SUCCEEDED, 30, "a first job", alive=[worker])
    if how == "deleted":  # as ``rm e2e.db*`` does
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    else:
        other = tmp_path / "other.db"
        assert underway("--url", f"sqlite:///{other}", "migrate").returncode == 0
        os.replace(other, db)
    lost_at = time.monotonic()

    def unhealthy() -> httpx.Response | None:
        answer = health(base)
        return answer if answer is not None and answer.status_code == 503 else None

    answer = wait_until(unhealthy, 10, "/healthz to answer 503", alive=[server])
    assert answer.json() == {"ok": False, "store": f"database file {how} while open: {RESTART}"}
    assert worker.wait(10) == 1
    noticed = time.monotonic() - lost_at
    message = f"the database file {db} was {how} while this process had it open"
    assert message in worker.stderr, worker.output()
    assert "Traceback" not in worker.stderr, worker.output()
    assert noticed < 5, f"the worker took {noticed:.1f} s to notice"

    refused = httpx.post(f"{base}/jobs", json={"task": "greet", "args": {"name": "x"}}, trust_env=False)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_error"
    wait_until(lambda: message in server.stderr, 10, "the server to log it", alive=[server])
    doctor = underway("--server", base, "doctor")
    assert doctor.returncode == 1
    assert f"store: database file {how} while open" in doctor.stdout

    # Restarted, a worker opens the file now at the path and runs what was submitted there.
    fresh = Probe(db_url)
    try:
        late = fresh.submit("greet", {"name": "after"})
        again = procs.worker("worker-again")
        wait_until(lambda: fresh.job(late.id).status is Status.SUCCEEDED, 30, "the late job", alive=[again])
    finally:
        fresh.close()


def test_doctor_says_ok_on_a_healthy_store(underway: Cli) -> None:
    done = underway("doctor")
    assert (done.returncode, done.stdout.strip()) == (0, "store: ok"), done.stderr
    done = underway("doctor", "--json")
    assert json.loads(done.stdout) == {"ok": True, "store": "ok"}


@pytest.fixture
def read_only_dir(tmp_path: Path, underway: Cli) -> Iterator[Path]:
    """A folder holding a migrated database, mounted read-only (a bind mount: root ignores
    permission bits, not a read-only mount). Skips where this process may not mount (fails
    under CI=true)."""
    writable = tmp_path / "rw"
    writable.mkdir()
    assert underway("--url", f"sqlite:///{writable / 'ro.db'}", "migrate").returncode == 0
    mounted = tmp_path / "ro"
    mounted.mkdir()
    bind = subprocess.run(["mount", "--bind", str(writable), str(mounted)], capture_output=True, check=False)
    if bind.returncode != 0:
        unavailable("a bind mount (root)", f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True, capture_output=True)
        yield mounted
    finally:
        subprocess.run(["umount", str(mounted)], check=True, capture_output=True)


def test_a_read_only_filesystem_fails_doctor_and_stops_the_server_saying_why(
    read_only_dir: Path, procs: Processes, underway: Cli
) -> None:
    url = f"sqlite:///{read_only_dir / 'ro.db'}"
    reason = "cannot write: the filesystem is read-only"
    done = underway("--url", url, "doctor")
    assert done.returncode == 1
    assert done.stdout.strip() == f"store: {reason}"
    assert "mounted read-write" in done.stderr
    done = underway("--url", url, "doctor", "--json")
    assert (done.returncode, json.loads(done.stdout)) == (1, {"ok": False, "store": reason})
    # SQLite cannot open a WAL database there at all: the server cannot start, and says why.
    server = procs.start("server", "--app", APP, "--url", url, "server", "--port", str(free_port()))
    assert server.wait(30) != 0
    assert (
        f"cannot write to the database {read_only_dir / 'ro.db'}: the filesystem is read-only"
        in server.stderr
    )


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_health_is_ok_and_fails_when_the_connection_cannot_write(
    procs: Processes, underway: Cli, db_url: str, env: dict[str, str]
) -> None:
    _server, base = serve(procs, "server")
    answer = health(base)
    assert answer is not None
    assert (answer.status_code, answer.json()) == (200, {"ok": True, "store": "ok"})
    assert underway("doctor").returncode == 0

    read_only = db_url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
    reason = "cannot write: transactions are read-only (default_transaction_read_only)"
    _ro_server, ro_base = serve(procs, "ro-server", "--url", read_only)
    answer = health(ro_base)
    assert answer is not None
    assert (answer.status_code, answer.json()) == (503, {"ok": False, "store": reason})
    done = underway("--url", read_only, "doctor")
    assert (done.returncode, done.stdout.strip()) == (1, f"store: {reason}")
