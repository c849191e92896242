"""Job-provided text written to the worker's own log cannot forge log lines: control
characters are escaped there (the job's ``log`` events keep the text as it was)."""

from __future__ import annotations

import logging

import pytest
from integration_support import running_worker

import underway
from underway import EventType

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

FORGED = "fetched\n2026-12-05 12:00:00 underway.worker INFO admin logged in\x1b[2K\x1b[31m"


async def test_a_task_log_line_with_newlines_and_ansi_escapes_is_escaped_in_the_process_log(
    app: underway.App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="chatty")
    async def chatty(ctx: underway.Context, text: str) -> None:
        ctx.log.warning("%s", text)

    job = await chatty.submit(text=FORGED)
    with caplog.at_level(logging.INFO, logger="underway.tasks"):
        async with running_worker(app):
            await app.wait(job.id, timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "underway.tasks"]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert "\x1b" not in lines[0]
    assert lines[0].endswith(
        "fetched\\n2026-12-05 12:00:00 underway.worker INFO admin logged in\\x1b[2K\\x1b[31m"
    )
    logged = [e for e in await app.events(job.id) if e.type is EventType.LOG]
    assert logged[0].data["message"] == FORGED
