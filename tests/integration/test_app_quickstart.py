"""The quickstart example of the README runs as written and ends with a succeeded job."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


@pytest.mark.timeout(60)
def test_the_quickstart_example_runs(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "quickstart.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERWAY_")}

    done = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "quickstart.db").exists(), "it writes its database in its working directory"
    lines = done.stdout.splitlines()
    seqs = [int(line.split(" ", 1)[0]) for line in lines]
    assert seqs[0] == 1
    assert seqs == sorted(set(seqs)), "in order, nothing twice (progress may be coalesced)"
    kinds = [line.split(" ", 2)[1] for line in lines]
    assert kinds[:2] == ["status", "status"]
    assert "progress" in kinds
    assert "log" in kinds
    _last_seq, last_kind, last_data = lines[-1].split(" ", 2)
    assert last_kind == "status"
    data = ast.literal_eval(last_data)
    assert data["status"] == "succeeded"
    assert data["result"] == {"site": "example.org", "pages": 20}
