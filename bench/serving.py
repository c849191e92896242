"""Shared pieces of the server benchmarks (sse_latency.py, fanout.py, http_load.py).

An ``underway server`` and ``underway worker`` as subprocesses on one SQLite file (each in
its own process group, ended by :func:`bench.common.stop_all` at exit), helper processes with
pipes (ended the same way), and facts read from ``/proc`` (RSS, open descriptors).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import common

#: Descriptors the server and the client processes may open (soft = hard limit).
NOFILE = 20_000

#: Helper processes with pipes (asyncio subprocesses), ended at exit like bench.common's.
_HELPERS: list[asyncio.subprocess.Process] = []


def raise_nofile(wanted: int = NOFILE) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def nofile_limit() -> int:
    """The limit the server gets: NOFILE, or the hard limit if that is lower."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: ``underway`` with uvloop's event loop policy installed first (an experiment: ``underway
#: server`` runs ``asyncio.run``, so uvicorn's ``loop="uvloop"`` setting is not applied).
UVLOOP = "import asyncio, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"

#: Diagnostics (the server's code is unchanged): a line ``gc2 at=<time.time()> ms=<duration>``
#: on stderr (the server's log) after every full collection of Python's cyclic garbage
#: collector, and on SIGUSR2 a line ``count tasks=<asyncio tasks> objects=<objects the GC tracks>``.
GC_LOG = """import asyncio, gc, signal, sys, time
_gc = {}
def _gc_callback(phase, info):
    if info["generation"] == 2:
        if phase == "start":
            _gc["t"], _gc["at"] = time.perf_counter(), time.time()
        else:
            ms = (time.perf_counter() - _gc["t"]) * 1000
            line = f"gc2 at={_gc['at']:.3f} ms={ms:.1f} collected={info['collected']}"
            print(line, file=sys.stderr, flush=True)
gc.callbacks.append(_gc_callback)
def _count(signum, frame):
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = -1
    print(f"count tasks={tasks} objects={len(gc.get_objects())}", file=sys.stderr, flush=True)
signal.signal(signal.SIGUSR2, _count)
"""


def counts(log: Path) -> list[dict[str, int]]:
    """The ``count`` lines a ``gc_log`` server wrote on SIGUSR2, oldest first."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [
        {k: int(v) for k, v in (part.split("=", 1) for part in line.split()[1:])}
        for line in lines
        if line.startswith("count tasks=")
    ]


async def count_objects(pid: int, log: Path) -> dict[str, int]:
    """Ask a ``gc_log`` server for its task and object counts (SIGUSR2) and read the answer."""
    before = len(counts(log))
    os.kill(pid, signal.SIGUSR2)
    for _ in range(200):
        await asyncio.sleep(0.05)
        found = counts(log)
        if len(found) > before:
            return found[-1]
    return {}


def gc_pauses(log: Path) -> list[tuple[float, float]]:
    """(start time, milliseconds) of every full collection a ``gc_log`` server logged."""
    pauses = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        if line.startswith("gc2 at="):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            pauses.append((float(fields["at"]), float(fields["ms"])))
    return pauses


def start_server(
    url: str,
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    flags: Sequence[str] = (),
    uvloop: bool = False,
    gc_log: bool = False,
) -> subprocess.Popen[bytes]:
    """``underway server`` on 127.0.0.1:port, with its open-file limit raised by ``prlimit``.

    ``prlimit`` sets the limit and then execs the command, so the pid is the server's.
    ``uvloop``: run it on uvloop's event loop; ``gc_log``: log full garbage collections (see
    ``UVLOOP`` and ``GC_LOG``).
    """
    limit = nofile_limit()
    launcher = common.underway_command()
    if uvloop or gc_log:
        code = (UVLOOP if uvloop else "") + (GC_LOG if gc_log else "")
        launcher = [sys.executable, "-c", code + "from underway.cli import main; main()"]
    argv = [
        "prlimit",
        f"--nofile={limit}:{limit}",
        "--",
        *launcher,
        "--url",
        url,
        "--app",
        "bench.apps:app",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]
    return common.start(argv, log, env={"UNDERWAY_URL": url, **(env or {})})


def start_worker(url: str, log: Path, concurrency: int = 10) -> subprocess.Popen[bytes]:
    argv = [
        *common.underway_command(),
        "--url",
        url,
        "--app",
        "bench.apps:app",
        "worker",
        "--concurrency",
        str(concurrency),
    ]
    return common.start(argv, log, env={"UNDERWAY_URL": url})


async def wait_ready(
    client: httpx.AsyncClient,
    procs: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
    *,
    workers: int = 0,
    timeout: float = 60.0,
) -> None:
    """Until the server answers /api/healthz and ``workers`` workers are registered."""
    deadline = time.monotonic() + timeout
    while True:
        common.check_alive(procs, logs)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the server was not ready within {timeout:.0f} s")
        try:
            if (await client.get("/api/healthz")).status_code == 200:
                if workers == 0:
                    return
                listed = (await client.get("/api/workers")).json()["workers"]
                if len(listed) >= workers:
                    return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)


async def submit(client: httpx.AsyncClient, task: str, **args: Any) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={"task": task, "args": args})
    response.raise_for_status()
    return dict(response.json())


async def wait_status(
    client: httpx.AsyncClient, job_id: str, status: str, *, key: str | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the job every 10 ms until it has ``status`` (and, if given, its prompt has ``key``)."""
    deadline = time.monotonic() + timeout
    while True:
        job = (await client.get(f"/api/jobs/{job_id}")).json()
        if job["status"] == status and (key is None or (job.get("prompt") or {}).get("key") == key):
            return dict(job)
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is {job['status']}, not {status}, after {timeout:.0f} s")
        await asyncio.sleep(0.01)


# -- /proc -------------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """Resident set size (VmRSS) of a process, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return -1


def server_errors(log: Path, lines: int = 8) -> list[str]:
    """Lines of the server's log that look like errors (the log is small: warnings only)."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = [line for line in text if "Error" in line or "Traceback" in line or "ERROR" in line]
    return found[:lines]


# -- helper processes with pipes ------------------------------------------------------------


async def spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """A helper process in its own process group with stdin/stdout pipes (ended at exit)."""
    pythonpath = os.pathsep.join(p for p in (str(common.ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=common.ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=64 * 1024 * 1024,
    )
    _HELPERS.append(proc)
    return proc


def end_helpers() -> None:
    """SIGKILL every helper's process group (they have nothing to save)."""
    while _HELPERS:
        proc = _HELPERS.pop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def install_cleanup() -> None:
    import atexit

    common.install_cleanup()
    atexit.register(end_helpers)
