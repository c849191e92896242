"""``underway demo``, as the README tells a newcomer to run it (``--once``: exit when its jobs
end instead of serving on; ``--port 0``: any free port)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e_support import cli

from underway import demo

DEMO_TASKS = sorted({task.name for task, _args in demo.DEMO_JOBS})


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_demo_runs_every_job_to_success(tmp_path: Path, env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = cli(tmp_path, env, "--url", url, "demo", "--once", "--port", "0", timeout=50)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert f"store {url}" in done.stdout
    assert re.search(r"API http://127\.0\.0\.1:[1-9][0-9]*/api/docs", done.stdout), done.stdout
    summary = re.findall(r"^([0-9a-z]{26})  (\S+) +(\w+)  ", done.stdout, flags=re.M)
    assert len(summary) == len(demo.DEMO_JOBS), done.stdout
    assert sorted({task for _id, task, _status in summary}) == DEMO_TASKS
    assert {status for _id, _task, status in summary} == {"succeeded"}, done.stdout
    assert "asks: 20 documents extracted. Publish them?" in done.stdout
    assert not (tmp_path / "underway-demo.db").exists()  # --url was obeyed
