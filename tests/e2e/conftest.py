"""Fixtures of the end-to-end tests: a store (a SQLite file in ``tmp_path`` by default), subprocesses,
a probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Cli, Probe, Processes, subprocess_env
from postgres_support import fresh_postgres_url


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file in ``tmp_path``; a fresh PostgreSQL schema for tests parametrized with
    ``pytest.mark.parametrize("db_url", ["postgres"], indirect=True)``."""
    if getattr(request, "param", "sqlite") == "postgres":
        yield from fresh_postgres_url()
    else:
        yield f"sqlite:///{tmp_path / 'e2e.db'}"


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
