"""Fixtures of the end-to-end tests: a SQLite file in ``tmp_path``, subprocesses, a probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Cli, Probe, Processes, subprocess_env


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'e2e.db'}"


@pytest.fixture
def env(db_url: str) -> dict[str, str]:
    return subprocess_env(db_url)


@pytest.fixture
def procs(tmp_path: Path, env: dict[str, str]) -> Iterator[Processes]:
    processes = Processes(tmp_path, env)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def probe(db_url: str) -> Iterator[Probe]:
    view = Probe(db_url)
    try:
        yield view
    finally:
        view.close()


@pytest.fixture
def underway(tmp_path: Path, env: dict[str, str], db_url: str) -> Cli:
    """The command line, pointed at this test's store (``--url``) and test app (``--app``)."""
    return Cli(tmp_path, env, db_url)
