"""Tasks the end-to-end tests run in worker subprocesses (``--app e2e_tasks:app``).

This directory is put on the subprocesses' ``PYTHONPATH``; the test process loads the module
by path and calls :func:`register` on its own App, so both sides know the same tasks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import underway

#: A body that waits for the test never runs longer than this, even if the test died.
MAX_WAIT = 60.0


def register(app: underway.App) -> underway.App:
    """Register every e2e task on ``app`` and return it."""

    @app.task(name="record")
    def record(ctx: underway.Context, out_dir: str) -> str:
        """A quick job: append the job id to this process's file in ``out_dir``."""
        line = f"{ctx.job_id}\n".encode()
        fd = os.open(Path(out_dir) / f"{os.getpid()}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return ctx.job_id

    @app.task(name="hold", retries=1)
    def hold(ctx: underway.Context, release: str, steps: int = 5) -> dict[str, Any]:
        """Attempt 1 reports progress until the file ``release`` exists, then returns at once;
        later attempts report ``steps`` steps and return.

        It is a sync task: its thread goes on the moment a stopped worker is continued, so its
        end usually reaches the store before the worker's heartbeat learns the lease is gone.
        Every progress message and log names the attempt, so a test can tell whose write it is.
        """
        started = time.monotonic()
        current = 0
        if ctx.attempt == 1:
            while not Path(release).exists() and time.monotonic() - started < MAX_WAIT:
                current += 1
                ctx.progress(current, message=f"attempt {ctx.attempt}")
                time.sleep(0.02)
            return {"attempt": ctx.attempt}
        for _ in range(steps):
            current += 1
            ctx.progress(current, message=f"attempt {ctx.attempt}")
            time.sleep(0.01)
        ctx.log.info("attempt %d finishing", ctx.attempt, attempt=ctx.attempt)
        return {"attempt": ctx.attempt}

    @app.task(name="sleep_for")
    async def sleep_for(ctx: underway.Context, seconds: float) -> float:
        """Report progress every 20 ms for ``seconds``."""
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            ctx.progress(elapsed, seconds, message="sleeping")
            await asyncio.sleep(0.02)
        return seconds

    @app.task(name="nap")
    def nap(ctx: underway.Context, seconds: float) -> float:
        """A sync task stuck in one long call: it reports it started, then sleeps ``seconds``."""
        ctx.progress(0, message="napping")
        time.sleep(seconds)
        ctx.progress(1, message="woke up")
        return seconds

    @app.task(name="nap_in_thread")
    def nap_in_thread(ctx: underway.Context, seconds: float) -> float:
        """``nap`` in a thread of its own that Python waits for at exit (not a daemon, though started
        by one)."""
        ctx.progress(0, message="napping in a thread")
        sleeper = threading.Thread(target=time.sleep, args=(seconds,), name="e2e-sleeper", daemon=False)
        sleeper.start()
        sleeper.join()
        return seconds

    @app.task(name="kill_worker")
    def kill_worker() -> None:
        """Kills the worker running it with SIGKILL, every time: what a job that runs its worker
        out of memory does."""
        os.kill(os.getpid(), signal.SIGKILL)

    @app.task(name="greet")
    def greet(name: str, times: int = 1) -> str:
        return " ".join([f"hello {name}"] * times)

    @app.task(name="confirm", retries=1)
    async def confirm(ctx: underway.Context, question: str = "Proceed?") -> dict[str, Any]:
        ctx.progress(1, 2, message="asking")
        answer = await ctx.ask(question, options=["yes", "no"])
        ctx.progress(2, 2, message="answered")
        return {"answer": answer}

    @app.task(name="fail_first")
    def fail_first(ctx: underway.Context) -> dict[str, int]:
        """Fails on attempt 1 (it has no retries); succeeds when run again."""
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails on purpose")
        return {"attempt": ctx.attempt}

    @app.task(name="fail_then_hold")
    def fail_then_hold(ctx: underway.Context, release: str) -> dict[str, int]:
        """Fails on attempt 1; run again, it logs a line, then waits for the file ``release``."""
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails on purpose")
        ctx.log.info("attempt %d waits for the release", ctx.attempt)
        started = time.monotonic()
        while not Path(release).exists() and time.monotonic() - started < MAX_WAIT:
            ctx.progress(time.monotonic() - started)
            time.sleep(0.02)
        return {"attempt": ctx.attempt}

    @app.task(name="always_fail")
    def always_fail() -> None:
        raise ValueError("this task always fails")

    @app.task(name="span")
    def span(ctx: underway.Context, out_dir: str, key: str = "", hold: float = 0.05) -> str:
        """Hold for ``hold`` seconds; append ``job key start end`` (``time.time()``) to this
        process's file in ``out_dir``."""
        return _span(ctx, out_dir, key, hold)

    @app.task(name="keyed_span", concurrency=2, concurrency_key=lambda key, **_: key)
    def keyed_span(ctx: underway.Context, out_dir: str, key: str, hold: float = 0.05) -> str:
        """``span``, at most 2 jobs of one ``key`` at a time over all workers."""
        return _span(ctx, out_dir, key, hold)

    @app.task(name="rated", rate_limit="5/s")
    def rated(ctx: underway.Context, out_dir: str) -> str:
        """``span`` without the hold, at most 5 starts per second over all workers."""
        return _span(ctx, out_dir, "rated", 0.0)

    return app


def _span(ctx: underway.Context, out_dir: str, key: str, hold: float) -> str:
    started = time.time()
    time.sleep(hold)
    line = f"{ctx.job_id} {key or '-'} {started!r} {time.time()!r}\n".encode()
    fd = os.open(Path(out_dir) / f"{os.getpid()}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return ctx.job_id


app = register(underway.App())
