"""The batch and queue commands, run as users run them: one ``underway`` process per command.

Every test runs twice: on the store (``--url``, with ``--app`` only for ``batch submit``) and
through a running ``underway server`` subprocess (``--server``, with a store URL that cannot be
opened, so nothing goes around the server). Items run in ``underway worker`` subprocesses on
the test's SQLite file; the tasks are in ``apps/batch_tasks.py``.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import APPS, UNDERWAY, Processes, wait_until

import underway
from underway.batches import BatchView

pytestmark = pytest.mark.timeout(90)

APP = "batch_tasks:app"
#: Where a command through ``--server`` would find a store, if it looked: nowhere.
NO_STORE = "sqlite:////nonexistent/never-used.db"


class Probe:
    """The test's own view of the store: an App with the batch tasks, on a private loop."""

    def __init__(self, url: str) -> None:
        spec = importlib.util.spec_from_file_location("underway_batch_tasks", APPS / "batch_tasks.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.app: underway.App = module.register(underway.App(url))
        self._runner = asyncio.Runner()

    def close(self) -> None:
        self._runner.run(self.app.close())
        self._runner.close()

    def batch(self, batch_id: str) -> BatchView:
        return self._runner.run(self.app.batch_view(batch_id))

    def submit(self, task: str, args: dict[str, Any], **options: Any) -> underway.Job:
        return self._runner.run(self.app.submit(task, args, **options))

    def job(self, job_id: str) -> underway.Job:
        return self._runner.run(self.app.get(job_id))

    def items(self, batch_id: str) -> list[underway.Job]:
        """The batch's jobs in submission order."""
        return self._runner.run(self.app.batch_items(batch_id, limit=100_000))[::-1]


class BatchCli:
    """``underway ARGS`` on the test's store, or through the test's server."""

    def __init__(self, cwd: Path, env: dict[str, str], url: str, server: str | None) -> None:
        self.cwd, self.env, self.url, self.server = cwd, env, url, server

    def flags(self, app: bool) -> tuple[str, ...]:
        if self.server is not None:
            return ("--server", self.server)
        return ("--url", self.url, *(("--app", APP) if app else ()))

    def __call__(
        self, *args: str, app: bool = False, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``app``: the command needs the tasks (``batch submit`` on the store)."""
        environment = {**self.env, **(env or {})}
        if self.server is not None:
            environment["UNDERWAY_URL"] = NO_STORE
        return subprocess.run(
            [*UNDERWAY, *self.flags(app), *args],
            cwd=self.cwd,
            env=environment,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str, app: bool = False, stdin: str | None = None) -> str:
        done = self(*args, app=app, stdin=stdin)
        assert done.returncode == 0, f"underway {' '.join(args)} exited {done.returncode}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str, app: bool = False) -> Any:
        return json.loads(self.ok(*args, "--json", app=app))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def probe(db_url: str) -> Iterator[Probe]:
    view = Probe(db_url)
    try:
        yield view
    finally:
        view.close()


@pytest.fixture(params=["store", "server"])
def ub(
    request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str], db_url: str, procs: Processes
) -> BatchCli:
    """The command line on this test's store, or through a server on it."""
    if request.param == "store":
        return BatchCli(tmp_path, env, db_url, None)
    port = free_port()
    server = procs.start("server", "--app", APP, "server", "--port", str(port))
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            with underway.Client(api, timeout=1) as client:
                return bool(client.health()["ok"])
        except underway.ServerError:
            return False

    wait_until(healthy, 30, "the server to answer", alive=[server])
    return BatchCli(tmp_path, env, db_url, api)


def worker(procs: Processes, *flags: str) -> Any:
    return procs.start("worker", "--app", APP, "worker", *flags)


def write_items(path: Path, count: int, **extra: Any) -> Path:
    path.write_text(json.dumps([{"n": n, **extra} for n in range(count)]), encoding="utf-8")
    return path


def failing_items(path: Path, count: int, fixed: Path, every: int = 4) -> Path:
    """``count`` items, every ``every``-th of which fails until the file ``fixed`` exists."""
    items = [{"n": n, **({"fail_until": str(fixed)} if n % every == 0 else {})} for n in range(count)]
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


# -- submit, show, list ------------------------------------------------------------------------


def test_batch_submit_from_a_file_or_stdin_then_show_and_list(
    ub: BatchCli, probe: Probe, tmp_path: Path
) -> None:
    items = write_items(tmp_path / "items.json", 5)
    made = ub.json(
        "batch", "submit", "square", "--items", str(items), "--name", "five", "--queue", "maths",
        "--label", "team=data", "--label", "run=1", app=True,
    )  # fmt: skip
    assert made == probe.batch(made["id"]).to_dict()
    assert (made["name"], made["queue"], made["total"], made["status"]) == ("five", "maths", 5, "queued")
    assert made["labels"] == {"team": "data", "run": "1"}
    assert [job.args["n"] for job in probe.items(made["id"])] == [0, 1, 2, 3, 4]

    ndjson = "\n".join(json.dumps({"n": n}) for n in (7, 8)) + "\n"
    second = ub.ok("batch", "submit", "square", "--items", "-", app=True, stdin=ndjson).strip()
    assert [job.args["n"] for job in probe.items(second)] == [7, 8]

    assert ub.json("batch", "show", made["id"]) == probe.batch(made["id"]).to_dict()
    shown = ub.ok("batch", "show", made["id"])
    for text in (made["id"], "five", "maths", "team=data", "queued", "0/5 (0%)", "queued 5"):
        assert text in shown, shown

    listed = ub.json("batch", "list")["batches"]
    assert [batch["id"] for batch in listed] == [second, made["id"]]
    assert ub.json("batch", "list", "--limit", "1")["batches"][0]["id"] == second
    table = ub.ok("batch", "list")
    assert made["id"] in table
    assert "0/2 (0%)" in table


def test_batch_submit_refuses_bad_items(ub: BatchCli, probe: Probe, tmp_path: Path) -> None:
    for text, message in [
        ("[{", "not a JSON array"),
        ('{"n": 1}\n{n', "line 2 is not JSON"),
        ("[1, 2]", "item 0 is not a JSON object"),
        ("[]", "at least one item"),
    ]:
        done = ub("batch", "submit", "square", "--items", "-", app=True, stdin=text)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr, done.stderr
    wrong = ub("batch", "submit", "square", "--items", "-", app=True, stdin='[{"n": 1}, {"n": "x"}]')
    assert wrong.returncode == 1, wrong.stderr
    assert "item 1" in wrong.stderr, wrong.stderr
    assert ub.json("batch", "list") == {"batches": []}


def test_batch_submit_on_the_store_needs_the_app(
    probe: Probe, tmp_path: Path, env: dict[str, str], db_url: str
) -> None:
    done = BatchCli(tmp_path, env, db_url, None)("batch", "submit", "square", "--items", "-", stdin="[{}]")
    assert done.returncode == 1
    assert "--app module:attribute" in done.stderr, done.stderr


# -- watch, retry-failed -----------------------------------------------------------------------


def test_batch_watch_ends_with_the_batch_and_retry_failed_completes_it(
    ub: BatchCli, procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    items = failing_items(tmp_path / "items.json", 10, fixed)
    batch_id = ub.ok("batch", "submit", "square", "--items", str(items), "--name", "ten", app=True).strip()
    running = worker(procs)

    watched = ub("batch", "watch", batch_id)
    assert watched.returncode == 1, watched.stderr
    assert "10/10" in watched.stdout
    assert watched.stdout.splitlines()[-1] == "partial · 3 failed · 7/10 succeeded"
    assert probe.batch(batch_id).status == "partial"

    fixed.touch()
    assert ub.ok("batch", "retry-failed", batch_id) == "retried 3 items\n"
    watched = ub("batch", "watch", batch_id)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[-1] == "completed · 10/10 succeeded"
    assert [job.attempt for job in probe.items(batch_id)] == [2, 1, 1, 1, 2, 1, 1, 1, 2, 1]
    again = ub.json("batch", "retry-failed", batch_id)
    assert again == {"retried": 0, "batch": probe.batch(batch_id).to_dict()}
    assert running.popen.poll() is None


def test_batch_submit_watch_and_show_the_running_items(
    ub: BatchCli, procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    items = write_items(tmp_path / "items.json", 2, hold=str(release))
    watcher = procs.start(
        "watch",
        *ub.flags(app=True),
        "batch", "submit", "square", "--items", str(items), "--watch",
        env={"TTY_COMPATIBLE": "1", "TERM": "xterm", **({"UNDERWAY_URL": NO_STORE} if ub.server else {})},
    )  # fmt: skip
    running = worker(procs)
    batch_id = wait_until(
        lambda: watcher.stdout.split("\n", 1)[0].strip(), 20, "the batch id", alive=[watcher]
    )
    wait_until(
        lambda: probe.batch(batch_id).counts["running"] == 2 and "holding 1" in watcher.stdout,
        20,
        "the watcher to show both running items",
        alive=[watcher, running],
    )
    shown = ub.ok("batch", "show", batch_id)
    assert "running 2" in shown
    assert "holding 0" in shown
    assert "holding 1" in shown
    release.touch()
    assert watcher.wait(30) == 0, watcher.output()
    assert "completed · 2/2 succeeded" in watcher.stdout


# -- pause, resume, cancel ---------------------------------------------------------------------


def test_batch_pause_resume_and_cancel(ub: BatchCli, probe: Probe, tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.json", 3)
    batch_id = ub.ok("batch", "submit", "square", "--items", str(items), "--delay", "3600", app=True).strip()
    assert ub.ok("batch", "pause", batch_id) == f"{batch_id} paused\n"
    assert probe.batch(batch_id).paused
    assert ub.json("batch", "resume", batch_id) == probe.batch(batch_id).to_dict()
    assert not probe.batch(batch_id).paused
    assert ub.ok("batch", "cancel", batch_id) == f"{batch_id} cancelled\n"
    view = probe.batch(batch_id)
    assert (view.status, view.counts["cancelled"]) == ("cancelled", 3)


def test_cancel_all_of_a_batch_or_a_label(ub: BatchCli, probe: Probe, tmp_path: Path) -> None:
    items = write_items(tmp_path / "items.json", 3)
    batch_id = ub.ok("batch", "submit", "square", "--items", str(items), "--delay", "3600", app=True).strip()
    kept = probe.submit("square", {"n": 1}, delay=3600)
    assert ub.ok("cancel", "--all", "--batch", batch_id) == "cancelled 3 jobs\n"
    assert probe.batch(batch_id).counts["cancelled"] == 3
    tagged = [probe.submit("square", {"n": n}, delay=3600, labels={"team": "a"}).id for n in range(2)]
    assert ub.json("cancel", "--all", "--label", "team=a") == {"cancelled": 2}
    assert {probe.job(job_id).status.value for job_id in tagged} == {"cancelled"}
    assert probe.job(kept.id).status.value == "queued"
    wrong = ub("cancel", kept.id, "--batch", batch_id)
    assert wrong.returncode == 2
    assert "go with --all" in wrong.stderr


def test_submit_with_an_idempotency_key(ub: BatchCli, probe: Probe) -> None:
    first = ub.json("submit", "square", "--args", '{"n": 3}', "--idempotency-key", "k-3", app=True)
    again = ub.json("submit", "square", "--args", '{"n": 3}', "--idempotency-key", "k-3", app=True)
    assert again["id"] == first["id"]
    assert probe.job(first["id"]).idempotency_key == "k-3"
    other = ub("submit", "square", "--args", '{"n": 4}', "--idempotency-key", "k-3", app=True)
    assert other.returncode == 1
    assert "error:" in other.stderr


# -- export ------------------------------------------------------------------------------------


def test_batch_export_in_three_formats(ub: BatchCli, procs: Processes, probe: Probe, tmp_path: Path) -> None:
    items = failing_items(tmp_path / "items.json", 8, tmp_path / "never", every=3)
    batch_id = ub.ok("batch", "submit", "square", "--items", str(items), app=True).strip()
    assert worker(procs, "--burst").wait(30) == 0
    jobs = probe.items(batch_id)
    assert probe.batch(batch_id).status == "partial"

    ub.ok("batch", "export", batch_id, "--format", "csv", "--output", "out.csv")
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["id"] for row in rows] == [job.id for job in jobs]
    assert [row["status"] for row in rows] == ["failed", "succeeded", "succeeded"] * 2 + [
        "failed",
        "succeeded",
    ]
    assert (rows[2]["args.n"], rows[2]["result.square"], rows[2]["error_type"]) == ("2", "4", "")
    assert (rows[3]["error_type"], rows[3]["error_message"]) == ("ValueError", "item 3 fails on purpose")

    ub.ok("batch", "export", batch_id, "--format", "json", "-o", "out.json")
    records = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert [record["id"] for record in records] == [job.id for job in jobs]
    assert records[1]["result"] == {"n": 1, "square": 1}
    assert json.loads(ub.ok("batch", "export", batch_id)) == records  # json to stdout by default

    lines = ub.ok("batch", "export", batch_id, "--format", "ndjson").splitlines()
    assert [json.loads(line) for line in lines] == records
    csv_out = ub.ok("batch", "export", batch_id, "--format", "csv")
    assert list(csv.DictReader(io.StringIO(csv_out, newline=""))) == rows


def test_an_unknown_batch_is_an_error(ub: BatchCli, tmp_path: Path) -> None:
    for command in (
        ("batch", "show"),
        ("batch", "watch"),
        ("batch", "cancel"),
        ("batch", "pause"),
        ("batch", "resume"),
        ("batch", "retry-failed"),
        ("batch", "export", "--output", "never.csv"),
    ):
        done = ub(*command, "MISSING")
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "no batch with id 'MISSING'" in done.stderr, done.stderr
    assert not (tmp_path / "never.csv").exists()


# -- queues ------------------------------------------------------------------------------------


def test_queues_and_queue_controls(ub: BatchCli, probe: Probe) -> None:
    job = probe.submit("square", {"n": 1}, queue="mail")
    assert ub.ok("queue", "pause", "mail") == "mail paused limit none\n"
    assert ub.ok("queue", "limit", "mail", "2") == "mail paused limit 2\n"
    (mail,) = [queue for queue in ub.json("queues")["queues"] if queue["name"] == "mail"]
    assert (mail["paused"], mail["concurrency"], mail["depth"], mail["running"]) == (True, 2, 1, 0)
    assert mail["throughput_1m"] == 0
    assert mail["oldest_queued_age_s"] >= 0
    table = ub.ok("queues")
    row = next(line for line in table.splitlines() if " mail " in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]][:7] == ["mail", "yes", "2", "1", "0", "0", "0"]
    assert ub.json("queue", "limit", "mail", "none")["concurrency"] is None
    assert ub.ok("queue", "resume", "mail") == "mail running limit none\n"
    assert probe.job(job.id).status.value == "queued"
    wrong = ub("queue", "limit", "mail", "0")
    assert wrong.returncode == 2
    assert "at least 1" in wrong.stderr
