"""The wheel ships what users run without a build step: the browser files and the whole
dashboard (its modules, styles and vendored libraries with their licences), and the SQL."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from e2e_support import ROOT

pytestmark = pytest.mark.timeout(120)


def test_the_wheel_holds_every_static_file_and_the_sql(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=100,
    )
    (wheel,) = tmp_path.glob("underway-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "underway"
    wanted = {
        path.relative_to(ROOT).as_posix()
        for folder in ("web/static", "store/sql")
        for path in (package / folder).rglob("*")
        if path.is_file()
    }
    assert {
        "underway/web/static/dashboard/vendor/preact.js",
        "underway/web/static/dashboard/index.html",
    } <= wanted
    assert wanted - shipped == set()
