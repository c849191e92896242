"""Helpers of the end-to-end tests: real ``underway`` processes on a real SQLite file.

Test modules import this by name (``tests/e2e`` is on ``sys.path`` under pytest's default
import mode); the fixtures that build these objects live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

import pytest

import underway
from underway.events import Event
from underway.jobs import Job
from underway.store import Store, WorkerInfo
from underway.tasks import SubmitOptions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
APPS = HERE / "apps"
APP = "e2e_tasks:app"
#: ``python -m underway``: the CLI as users run it, in a fresh interpreter.
UNDERWAY = (sys.executable, "-m", "underway")

T = TypeVar("T")


def load_tasks_module() -> ModuleType:
    """``tests/e2e/apps/e2e_tasks.py``, loaded by path (the subprocesses import it by name)."""
    spec = importlib.util.spec_from_file_location("underway_e2e_tasks", APPS / "e2e_tasks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subprocess_env(url: str) -> dict[str, str]:
    """The environment of every subprocess: no stray ``UNDERWAY_*``, the test apps importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERWAY_")}
    env.update(
        UNDERWAY_URL=url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(APPS), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        NO_COLOR="1",
        TERM="dumb",
    )
    return env


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    alive: Sequence[Proc] = (),
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails the test after ``timeout`` seconds, or as soon as one of the ``alive`` processes
    exits (with its output, which is what one needs to see then).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in alive:
            if proc.popen.poll() is not None:
                pytest.fail(
                    f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}\n{proc.output()}"
                )
        if time.monotonic() > deadline:
            details = "\n".join(proc.output() for proc in alive)
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{details}")
        time.sleep(interval)


class Proc:
    """One ``underway`` subprocess; its stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, name: str, args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.stdout_path = cwd / f"{name}.stdout"
        self.stderr_path = cwd / f"{name}.stderr"
        self._files: list[IO[bytes]] = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.popen = subprocess.Popen(
            [*UNDERWAY, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- {self.name} stdout ---\n{self.stdout}--- {self.name} stderr ---\n{self.stderr}"

    def send(self, signum: signal.Signals) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; fail the test (showing the output) after ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still runs after {timeout:g} s\n{self.output()}")

    def kill(self) -> None:
        """End the process whatever its state (a stopped one too) and close its files."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        for file in self._files:
            file.close()


class Processes:
    """Starts ``underway`` subprocesses for one test and kills every one of them afterwards."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.started: list[Proc] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, args, cwd=self.cwd, env={**self.env, **(env or {})})
        self.started.append(proc)
        return proc

    def worker(self, name: str, *flags: str) -> Proc:
        return self.start(name, "--app", APP, "worker", *flags)

    def close(self) -> None:
        for proc in self.started:
            proc.kill()


def cli(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run one ``underway`` command to its end and return what it printed."""
    return subprocess.run(
        [*UNDERWAY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Probe:
    """The test's own view of the store, through the public App API on a private event loop."""

    def __init__(self, url: str) -> None:
        self.app: underway.App = load_tasks_module().register(underway.App(url))
        self._runner = asyncio.Runner()

    def close(self) -> None:
        self._runner.run(self.app.close())
        self._runner.close()

    def submit(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> Job:
        return self._runner.run(self.app.submit(task, args or {}, **options))

    def submit_many(self, task: str, args: dict[str, Any], count: int, **options: Any) -> list[Job]:
        """Store ``count`` jobs in one transaction."""
        new = [self.app.new_job(task, args, SubmitOptions(**options)) for _ in range(count)]
        return self._runner.run(self._on_store(lambda store: store.enqueue(new)))

    async def _on_store(self, call: Callable[[Store], Awaitable[T]]) -> T:
        await self.app.open()
        return await call(self.app.store)

    def job(self, job_id: str) -> Job:
        return self._runner.run(self.app.get(job_id))

    def jobs(self, **filters: Any) -> list[Job]:
        return self._runner.run(self.app.list_jobs(**{"limit": 1_000_000, **filters}))

    def events(self, job_id: str) -> list[Event]:
        return self._runner.run(self.app.events(job_id, limit=1_000_000))

    def all_events(self) -> list[Event]:
        """Every event of every job, in commit order."""
        events, _ = self._runner.run(self._on_store(lambda store: store.feed(0, limit=100_000_000)))
        return events

    def cancel(self, job_id: str) -> Job:
        return self._runner.run(self.app.cancel(job_id))

    def workers(self) -> list[WorkerInfo]:
        """The workers that heartbeat in the last minute."""
        return self._runner.run(self._on_store(lambda store: store.workers(60.0)))


def status_events(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type.value == "status"]


def assert_contiguous(job: Job, events: Sequence[Event]) -> None:
    """The job's events are numbered 1..n without gaps, and the job row knows n."""
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), f"job {job.id}: seqs {seqs}"
    assert job.last_seq == len(seqs), f"job {job.id}: last_seq {job.last_seq}, {len(seqs)} events"


class Cli:
    """Runs ``underway --url <the test's store> [--app e2e_tasks:app] ARGS`` to its end."""

    def __init__(self, cwd: Path, env: dict[str, str], url: str) -> None:
        self.cwd = cwd
        self.env = env
        self.url = url

    def __call__(
        self, *args: str, app: bool = True, columns: int | None = 200, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """``columns=None``: as when output goes to a file (rich assumes 80 columns then)."""
        flags = ("--url", self.url, *(("--app", APP) if app else ()))
        env = {k: v for k, v in self.env.items() if k != "COLUMNS"}
        if columns is not None:
            env["COLUMNS"] = str(columns)
        return cli(self.cwd, env, *flags, *args, timeout=timeout)

    def ok(self, *args: str, app: bool = True) -> str:
        """Run a command that must succeed; return its stdout."""
        done = self(*args, app=app)
        assert done.returncode == 0, f"underway {' '.join(args)} exited {done.returncode}\n{done.stderr}"
        return done.stdout
