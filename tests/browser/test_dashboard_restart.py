"""The server killed (``kill -9``) and restarted mid-job, with the dashboard's job page open: the
page reconnects by itself and shows every later event exactly once, and the job's end.

Real processes, as in production: ``underway server`` (the API and the dashboard) and
``underway worker`` on one SQLite file, with a task module written into ``tmp_path`` that logs
one line each time the test creates its gate file. The server alone is killed and started
again on the same port; the worker goes on, so the lines it logs while the server is down reach
the page after it reconnects (resumed after the last event it had: nothing missed, nothing
twice), and so do the lines logged after the restart.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx
import pytest
from browser_support import SOON, PageWatch, expect, wait_until

import underway

#: The task of this test: waits for a gate file before each line; the lines it logged survive
#: a new attempt (its checkpoint), though the worker is never killed here.
TASKS = '''
import asyncio
from pathlib import Path

import underway

app = underway.App()


@app.task(name="relay")
async def relay(ctx: underway.Context, gates: str, lines: int) -> dict:
    """Log ``relay line i of n`` once the file ``gates/i`` exists, for each i; then end."""
    start = ctx.last_checkpoint or 0
    for i in range(start + 1, lines + 1):
        while not (Path(gates) / str(i)).exists():
            await asyncio.sleep(0.01)
        ctx.log.info("relay line %d of %d", i, lines)
        ctx.progress(i, lines, message=f"line {i}")
        ctx.checkpoint(i)
    return {"lines": lines}
'''
LINES = 6
LINE = re.compile(r"relay line (\d+) of 6")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """An ``underway`` subprocess whose output goes to files (no pipe can fill up)."""

    def __init__(self, name: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.out = cwd / f"{name}.out"
        self._file: IO[bytes] = self.out.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "underway", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self._file.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._file.close()


class Deployment:
    """A server and a worker of the test's task module on one SQLite file."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        (tmp_path / "restart_tasks.py").write_text(TASKS, encoding="utf-8")
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.url = f"sqlite:///{tmp_path / 'restart.db'}"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERWAY_")}
        self.env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), self.env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
            NO_COLOR="1",
        )
        self.procs: list[Proc] = []
        self.server: Proc | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str, *args: str) -> Proc:
        proc = Proc(name, ["--app", "restart_tasks:app", "--url", self.url, *args], self.dir, self.env)
        self.procs.append(proc)
        return proc

    def start_server(self, name: str) -> None:
        self.server = self.start(name, "server", "--host", "127.0.0.1", "--port", str(self.port))
        wait_until(self.healthy, 20, what=f"{name} to answer")

    def healthy(self) -> bool:
        assert self.server is not None
        if self.server.popen.poll() is not None:
            pytest.fail(f"the server exited: {self.server.out.read_text(errors='replace')}")
        try:
            return httpx.get(f"{self.base}/api/healthz", timeout=2, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.base}/api", timeout=10, trust_env=False)

    def logged(self, job_id: str) -> list[int]:
        """The relay lines stored for the job, read from the store itself (no server needed; in a
        thread: Playwright's sync API holds an event loop on this one)."""

        async def read() -> list[int]:
            async with underway.App(self.url) as app:
                events = await app.events(job_id, types=["log"])
            return [int(m.group(1)) for e in events for m in LINE.finditer(str(e.data.get("message")))]

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, read()).result(30)

    def open_gate(self, i: int) -> None:
        (self.gates / str(i)).touch()

    def close(self) -> None:
        for i in range(1, LINES + 1):
            self.open_gate(i)
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    found = Deployment(tmp_path)
    try:
        yield found
    finally:
        found.close()


def shown_lines(page: PageWatch) -> list[int]:
    """The numbers of the relay lines the job page's log list shows, in its order."""
    texts = page.page.locator("ol.job-log-lines li .job-log-message").all_inner_texts()
    return [int(m.group(1)) for text in texts for m in LINE.finditer(text)]


def shown_seqs(page: PageWatch) -> list[int]:
    """The ``seq`` of every event of the job page's timeline, in its order."""
    found = page.page.locator("table.job-events tr[data-seq]").evaluate_all(
        "(rows) => rows.map((row) => Number(row.dataset.seq))"
    )
    return sorted(int(seq) for seq in found) if found else []


def forgive_the_outage(page: PageWatch, base: str) -> None:
    """Drop the console errors of the outage: the stream cut short by the kill, and requests to
    ``base`` refused while no server listened. Any other error stays."""
    outage = ("ERR_INCOMPLETE_CHUNKED_ENCODING", "ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE")
    page.console_errors[:] = [
        error
        for error in page.console_errors
        if not (f"({base}/api/" in error and any(f"net::{code}" in error for code in outage))
    ]


@pytest.mark.slow
def test_the_job_page_reconnects_after_a_restart_and_shows_every_later_event_once(
    deployment: Deployment, page: PageWatch
) -> None:
    deployment.start("worker", "worker", "--lease-timeout", "5s", "--progress-interval", "0.02s")
    deployment.start_server("server-1")
    with deployment.api() as api:
        made = api.post(
            "/jobs", json={"task": "relay", "args": {"gates": str(deployment.gates), "lines": LINES}}
        )
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]

    page.page.goto(f"{deployment.base}/jobs/{job_id}")
    expect(page.page.locator("header.top")).to_be_visible()
    for i in (1, 2):
        deployment.open_gate(i)
    wait_until(lambda: shown_lines(page) == [1, 2], what="lines 1 and 2 on the page")

    assert deployment.server is not None
    deployment.server.kill()  # kill -9: no goodbye to the page's stream
    for i in (3, 4):  # logged by the worker while no server runs
        deployment.open_gate(i)
    wait_until(lambda: deployment.logged(job_id) == [1, 2, 3, 4], what="lines 3 and 4 in the store")
    assert shown_lines(page) == [1, 2]
    deployment.start_server("server-2")  # the same port, the same store
    wait_until(lambda: shown_lines(page) == [1, 2, 3, 4], SOON * 3, what="the page to catch up by itself")

    for i in (5, 6):
        deployment.open_gate(i)
    wait_until(lambda: shown_lines(page) == list(range(1, LINES + 1)), SOON * 3, what="every line once")
    with deployment.api() as api:
        wait_until(lambda: api.get(f"/jobs/{job_id}").json()["status"] == "succeeded", what="the job to end")
        last_seq = api.get(f"/jobs/{job_id}").json()["last_seq"]
    expect(page.page.locator(f'section.job-page[data-job-id="{job_id}"]')).to_have_attribute(
        "data-status", "succeeded"
    )
    # Every event once in the timeline too, up to the last; nothing came twice meanwhile, nor late.
    if not page.page.locator("table.job-events").is_visible():  # the timeline may start folded
        page.page.locator("details.job-timeline summary").click()
    wait_until(lambda: shown_seqs(page) == list(range(1, last_seq + 1)), what="every event in the timeline")
    rows = page.page.locator("table.job-events tr[data-seq]").count()
    assert rows == last_seq, f"{rows} rows for {last_seq} events"
    assert shown_lines(page) == list(range(1, LINES + 1))
    forgive_the_outage(page, deployment.base)
    page.assert_clean()
