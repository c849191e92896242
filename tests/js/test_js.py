"""The JavaScript client's own suites (``js/``), run from pytest: ``node --test`` (the client
against real ``underway dev`` servers it starts with this interpreter) and ``vitest`` (the React
hooks in jsdom).

``npm ci`` runs first when ``js/node_modules`` is missing or older than ``js/package-lock.json``.
Without ``node`` or ``npm`` these tests skip with the reason, except under ``CI=true``, where they
fail: CI must not pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from needs import unavailable
from postgres_support import fresh_postgres_url

JS = Path(__file__).resolve().parents[2] / "js"
#: The oldest Node the package supports (its ``engines``).
NODE_MAJOR = 20
NODE = f"Node {NODE_MAJOR}+ with npm (the JavaScript client's tests)"

pytestmark = pytest.mark.slow


def _require(tool: str) -> str:
    """The path of ``tool``; skip (fail under ``CI=true``) when it is not installed."""
    found = shutil.which(tool)
    if found is None:
        unavailable(
            "Node and npm",
            f"{tool} is not on PATH: the JavaScript client's tests need Node {NODE_MAJOR}+ and npm",
        )
    return str(found)


def _run(command: Sequence[str], timeout: float, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("UNDERWAY_")}
    env.update(UNDERWAY_PYTHON=sys.executable, NO_COLOR="1", FORCE_COLOR="0", **variables)
    return subprocess.run(
        list(command), cwd=JS, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def node() -> str:
    """``node``, with ``js/node_modules`` installed from the lock file and up to date."""
    node = _require("node")
    npm = _require("npm")
    version = _run([node, "--version"], timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR:
        unavailable(
            "Node and npm",
            f"node {version} is too old: the JavaScript client's tests need Node {NODE_MAJOR}+",
        )
    installed = JS / "node_modules" / ".package-lock.json"  # npm writes it on each install
    lock = JS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _check(_run([npm, "ci", "--no-audit", "--no-fund"], timeout=300), "npm ci")
    return node


@pytest.mark.timeout(600)
def test_node_suite(node: str) -> None:
    """The client against real servers: transports, resume, tokens, backoff, REST (node:test);
    the resume suite on SQLite and on a fresh PostgreSQL schema."""
    files = sorted(str(path.relative_to(JS)) for path in (JS / "test").glob("*.test.mjs"))
    assert files, "no js/test/*.test.mjs"
    schemas = fresh_postgres_url()  # skips (fails under CI=true) without PostgreSQL
    postgres = next(schemas)
    try:
        command = [node, "--experimental-websocket", "--test", *files]
        _check(_run(command, timeout=540, UNDERWAY_JS_POSTGRES_URL=postgres), "node --test")
    finally:
        schemas.close()  # drops the schema


@pytest.mark.timeout(600)
def test_react_suite(node: str) -> None:
    """The React hooks in jsdom (vitest)."""
    npx = _require("npx")
    _check(_run([npx, "--no", "vitest", "run"], timeout=540), "vitest run")
