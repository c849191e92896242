"""Shared pieces of the benchmark scripts: machine facts, subprocesses, statistics, tables.

The scripts run as ``.venv/bin/python bench/<name>.py`` from the repository root (or anywhere:
subprocesses get the repository root as their working directory so ``bench.apps`` imports).
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import underway

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

#: Every subprocess a benchmark started, so that it is ended even on an error or a signal.
_STARTED: list[subprocess.Popen[bytes]] = []


# -- machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def git_revision() -> str:
    """The commit of the checkout the benchmarks run from (``+dirty``: underway/ has changes).

    A snapshot made with ``git archive`` has no ``.git``: write the commit in a file
    ``.bench-revision`` at its root.
    """
    marker = ROOT / ".bench-revision"
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "underway"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "underway": git_revision(),
        "underway_path": str(Path(underway.__file__).parent),
        "load_at_start": loadavg(),
    }
    try:
        import inotify_simple  # noqa: F401

        info["inotify"] = "yes"
    except ImportError:
        info["inotify"] = "no"
    try:
        from importlib.metadata import version

        info["huey"] = version("huey")
    except ImportError:
        info["huey"] = "not installed"
    return info


def print_machine(info: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    print(
        f"machine: nproc={info['nproc']} cpu={info['cpu']!r} python={info['python']}"
        f" sqlite={info['sqlite']} kernel={info['kernel']} inotify={info['inotify']} huey={info['huey']}"
    )
    print(
        f"underway {info['underway']} from {info['underway_path']} · {info['date']}"
        f" · load average {info['load_at_start']}"
    )
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    print()


# -- command line ------------------------------------------------------------------------------


def parser(description: str, default_runs: int = 5) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=default_runs, help=f"runs (default {default_runs})")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    return p


def write_json(path: Path | None, payload: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"\nwrote {path}")


# -- temporary files ---------------------------------------------------------------------------


@contextmanager
def workdir(name: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"underway-bench-{name}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


# -- PostgreSQL --------------------------------------------------------------------------------

#: The database the ``--url postgresql`` option names when given without a URL.
POSTGRES_URL = os.environ.get("UNDERWAY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def add_url_option(p: argparse.ArgumentParser) -> None:
    """``--url``: run on this PostgreSQL database (a fresh schema per run) instead of SQLite."""
    p.add_argument(
        "--url",
        nargs="?",
        const=POSTGRES_URL,
        default=None,
        help="run on PostgreSQL at this URL, each run in a new schema dropped afterwards"
        f" (bare --url: {POSTGRES_URL}); default: SQLite files",
    )


def schema_url(base: str, schema: str) -> str:
    """``base`` with ``schema`` first on the search_path (the store creates its tables there)."""
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}options=-csearch_path%3D{schema}"


@contextmanager
def postgres_schema(base: str, keep: bool = False) -> Iterator[str]:
    """A new schema ``bench_<random>`` in the database ``base`` names; yields its URL, drops it after."""
    import psycopg

    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield schema_url(base, schema)
    finally:
        if keep:
            print(f"kept schema {schema}")
        else:
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def postgres_facts(base: str) -> dict[str, str]:
    """Server version and the settings that matter for commit latency."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        facts = {"postgres": str(conn.execute(b"SHOW server_version").fetchone()[0])}  # type: ignore[index]
        for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
            facts[name] = str(conn.execute(f"SHOW {name}".encode()).fetchone()[0])  # type: ignore[index]
        facts["host"] = conn.info.host
    return facts


# -- subprocesses ------------------------------------------------------------------------------


def underway_command() -> list[str]:
    script = VENV_BIN / "underway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "underway"]


def start(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a subprocess in its own process group (ended by :func:`stop` or at exit).

    It runs in ROOT with ROOT first on PYTHONPATH, so that it imports the same underway as this
    process (the checkout or snapshot the benchmark runs from, not the virtualenv's editable one).
    """
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv), cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``timeout``."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5)
    # Children (huey's worker processes) may outlive their parent for a moment.
    _signal_group(proc, signal.SIGKILL)
    if proc in _STARTED:
        _STARTED.remove(proc)


def stop_all() -> None:
    for proc in list(_STARTED):
        try:
            stop(proc, timeout=5.0)
        except Exception as exc:  # keep ending the others
            print(f"could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def check_alive(procs: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path]) -> None:
    for proc, log in zip(procs, logs, strict=True):
        if proc.poll() is not None:
            raise RuntimeError(f"pid {proc.pid} exited with {proc.returncode}:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    """End every subprocess at exit, also on SIGTERM/SIGHUP."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # after "pid (comm)": state is fields[0], utime is field 14 overall → index 11 here.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of its live descendants (huey's worker processes)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as children:
                    todo += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return total


# -- statistics and tables ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100.0
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    """``median (min-max)`` of the runs."""
    if not values:
        return "n/a"
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))
