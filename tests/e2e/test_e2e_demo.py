"""``underway demo``, as the README tells a newcomer to run it (``--once``: exit when its jobs
end instead of serving on; ``--port 0``: any free port): it prints the dashboard's URL before
anything else and opens it in the user's browser (``$BROWSER`` here, with a display), runs every
demo job to success, answers its question, and runs a batch whose failing items end it
``partial`` without holding the demo up. When to open a browser at all (not with
``--no-browser``, in CI or without a display) is checked without a process."""

from __future__ import annotations

import asyncio
import re
import stat
from pathlib import Path

import pytest
from e2e_support import cli, wait_until

import underway
from underway import demo

DEMO_TASKS = sorted({task.name for task, _args in demo.DEMO_JOBS})
CORRUPT = sorted(item["photo"] for item in demo.DEMO_BATCH if item["corrupt"])


def fake_browser(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that records the URL it is asked to open (``$BROWSER``), and its record."""
    record = tmp_path / "opened.txt"
    script = tmp_path / "fake-browser"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n', encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def batch_items(url: str) -> list[underway.Job]:
    async def read() -> list[underway.Job]:
        async with underway.App(url) as app:
            (batch,) = await app.list_batches()
            assert batch.name == demo.DEMO_BATCH_NAME
            return await app.batch_items(batch.id, limit=100)

    return asyncio.run(read())


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_demo_opens_the_dashboard_and_runs_its_jobs_and_batch(
    tmp_path: Path, env: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    browser, opened = fake_browser(tmp_path)
    env = {k: v for k, v in env.items() if k not in ("CI", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=":99", BROWSER=str(browser))
    done = cli(tmp_path, env, "--url", url, "demo", "--once", "--port", "0", timeout=50)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    first, *_rest = done.stdout.splitlines()
    found = re.fullmatch(r"(http://127\.0\.0\.1:[1-9][0-9]*/)  ← the dashboard", first)
    assert found, f"the first line is not the dashboard's URL: {first!r}"
    dashboard = found.group(1)
    assert f"dashboard {dashboard} (opening it in your browser)" in done.stdout
    wait_until(opened.exists, 10, "the browser to be asked to open the dashboard")
    assert opened.read_text(encoding="utf-8").splitlines() == [dashboard]
    assert f"API {dashboard}api/docs" in done.stdout
    assert f"store {url}" in done.stdout
    summary = re.findall(r"^([0-9a-z]{26})  (\S+) +(\w+)  ", done.stdout, flags=re.M)
    assert len(summary) == len(demo.DEMO_JOBS), done.stdout
    assert sorted({task for _id, task, _status in summary}) == DEMO_TASKS
    assert {status for _id, _task, status in summary} == {"succeeded"}, done.stdout
    assert "asks: 20 documents extracted. Publish them?" in done.stdout
    total, failed = len(demo.DEMO_BATCH), len(CORRUPT)
    assert failed
    assert re.search(
        rf"^batch [0-9a-z]{{26}}  {demo.DEMO_BATCH_NAME}: partial · {failed} failed"
        rf" · {total - failed}/{total} succeeded$",
        done.stdout,
        flags=re.M,
    ), done.stdout
    items = batch_items(url)
    assert len(items) == total
    failures = sorted(job.args["photo"] for job in items if job.status.value == "failed")
    assert failures == CORRUPT
    assert {job.status.value for job in items} == {"succeeded", "failed"}
    assert all("is corrupt" in (job.error or {}).get("message", "") for job in items if job.error)
    assert not (tmp_path / "underway-demo.db").exists()  # --url was obeyed


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_demo_opens_no_browser_when_told_not_to(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    browser, opened = fake_browser(tmp_path)
    env = {**env, "DISPLAY": ":99", "BROWSER": str(browser)}
    env.pop("CI", None)
    done = cli(tmp_path, env, "--url", url, "demo", "--once", "--port", "0", "--no-browser", timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*/  ← the dashboard", done.stdout.splitlines()[0])
    assert "in your browser" not in done.stdout
    assert not opened.exists()


@pytest.mark.parametrize(
    ("no_browser", "env", "platform", "wanted"),
    [
        (False, {"DISPLAY": ":0"}, "linux", True),
        (False, {"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),
        (False, {}, "linux", False),  # a server, an SSH session: no display
        (False, {"DISPLAY": ""}, "linux", False),
        (False, {"DISPLAY": ":0", "CI": "true"}, "linux", False),
        (True, {"DISPLAY": ":0"}, "linux", False),
        (False, {}, "darwin", True),
        (False, {}, "win32", True),
        (False, {"CI": "1"}, "darwin", False),
        (True, {}, "darwin", False),
    ],
)
def test_when_the_demo_opens_a_browser(
    no_browser: bool, env: dict[str, str], platform: str, wanted: bool
) -> None:
    assert demo.should_open_browser(no_browser, env, platform) is wanted


def test_the_dashboards_url_is_one_a_local_browser_reaches() -> None:
    assert demo.dashboard_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert demo.dashboard_url("0.0.0.0", 8000) == "http://127.0.0.1:8000/"
    assert demo.dashboard_url("::1", 8001) == "http://[::1]:8001/"
    assert demo.dashboard_url("localhost", 80) == "http://localhost:80/"
