"""Every example runs, and every code snippet of the docs is a piece of an example.

Each example is copied into a temporary directory and run there as a subprocess (the examples
use relative ``sqlite:///`` paths), with a timeout; the assertions read what it printed.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
TIMEOUT = 60.0


def clean_env() -> dict[str, str]:
    """The environment without UNDERWAY_* variables, with this venv's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERWAY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "120"
    return env


def run_example(name: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """Run ``examples/<name>`` in ``tmp_path``; return its stdout (it must exit with status 0)."""
    shutil.copy(EXAMPLES / name, tmp_path / name)
    try:
        done = subprocess.run(
            [sys.executable, name],
            cwd=tmp_path,
            env={**clean_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} ran over {TIMEOUT} s:\n{_text(exc.stdout)}\n{_text(exc.stderr)}")
    assert done.returncode == 0, f"{name} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def lines_of(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines()]


def status_lines(requeued_because: str) -> list[str]:
    """The status events of a job whose first attempt was interrupted and whose second succeeded."""
    statuses = ["queued 0", "running 1", f"queued 1 {requeued_because}", "running 2", "succeeded 2"]
    return [f"    {status}" for status in statuses]


def test_quickstart(tmp_path: Path) -> None:
    out = lines_of(run_example("quickstart.py", tmp_path))
    assert out[0] == "1 status {'status': 'queued', 'attempt': 0}"
    assert out[1] == "2 status {'status': 'running', 'attempt': 1}"
    assert out[-1].endswith(
        "status {'status': 'succeeded', 'attempt': 1, 'result': {'site': 'example.org', 'pages': 20}}"
    )
    assert [int(line.split()[0]) for line in out] == list(range(1, len(out) + 1))


def test_defining(tmp_path: Path) -> None:
    out = lines_of(run_example("defining.py", tmp_path))
    assert out[0] == "['fmt', 'url', 'width'] ['url', 'width']"
    assert out[1].startswith("refused: invalid arguments for task 'images.resize': width:")
    assert "size: Extra inputs are not permitted" in out[1]
    assert out[2] == (
        "details: [{'loc': ['width'], 'message': 'Input should be a valid integer', 'type': 'int_type'},"
        " {'loc': ['size'], 'message': 'Extra inputs are not permitted', 'type': 'extra_forbidden'}]"
    )
    assert out[3] == "queued images 5 4 30 {'url': 'https://example.org/cat.png', 'width': 640, 'fmt': 'png'}"
    assert out[4] == "urgent 10 1 5 {'team': 'web'} alice"
    assert out[5].startswith("640 succeeded {'url': 'https://example.org/cat.png', 'width': 640")
    assert out[6].startswith("320 succeeded")
    assert out[7].startswith("128 succeeded")
    assert out[8] == "64 queued None"  # delayed by an hour: the burst worker left it


def test_progress(tmp_path: Path) -> None:
    out = lines_of(run_example("progress.py", tmp_path))
    progress = [line for line in out if " progress " in line]
    assert len(progress) < 40, "100,000 progress() calls must be coalesced into a few writes"
    assert any("step 1/3 'Downloading'" in line for line in progress)
    assert any("step 2/3 'Parsing rows'" in line and "/200" in line for line in progress)
    assert progress[-1].endswith("step 3/3 'Saving' 4/4 100.0%")  # the last value is always written
    logs = [line for line in out if " log " in line]
    assert len(logs) == 5
    assert "'fields': {'table': 'rows', 'batch': 0}" in logs[0]
    assert (
        "'level': 'warning', 'message': '2 rows had no e-mail address', 'fields': {'skipped': 2}" in logs[-1]
    )
    assert out[-1].endswith("status {'status': 'succeeded', 'attempt': 1, 'result': {'rows': 200}}")
    assert [int(line.split()[0]) for line in out] == list(range(1, len(out) + 1))


def test_checkpoints(tmp_path: Path) -> None:
    out = lines_of(run_example("checkpoints.py", tmp_path))
    assert out[:2] == ["attempt 1: starting at file 0", "attempt 2: starting at file 5"]
    assert out[2] == "succeeded {'uploaded': 10, 'attempts': 2} checkpoint: 10"
    assert out[3:] == ["queued 0", "running 1", "queued 1 retry", "running 2", "succeeded 2"]


def test_retries(tmp_path: Path) -> None:
    out = lines_of(run_example("retries.py", tmp_path))
    assert out[:3] == [
        "retry after attempt 1 waits 0.05 to 0.1 s",
        "retry after attempt 2 waits 0.1 to 0.2 s",
        "retry after attempt 3 waits 0.2 to 0.4 s",
    ]
    slow = out.index("retries.slow: succeeded after 3 of 3 attempts")
    assert out[slow + 1 : slow + 7] == [
        "    queued retry Timeout",
        "    running",
        "    queued retry Timeout",
        "    running",
        "    succeeded",
        "    result: done on attempt 3 | error: None",
    ]
    parse = out.index("retries.parse: failed after 1 of 6 attempts")
    assert out[parse + 1] == "    failed non_retryable ValueError"
    flaky = out.index("retries.flaky: failed after 2 of 2 attempts")
    assert out[flaky + 1 : flaky + 5] == [
        "    queued retry ConnectionError",
        "    running",
        "    failed attempts_exhausted ConnectionError",
        "    result: None | error: attempt 2 failed",
    ]


def test_cancel(tmp_path: Path) -> None:
    out = lines_of(run_example("cancel.py", tmp_path))
    assert out[0] == "queued job: cancelled"
    for task in ("count", "polite", "sleeper", "stubborn"):
        assert f"  cancel.{task}: cancel asked, status running, asked.cancel_requested=True" in out
        assert f"  cancel.{task} {{'status': 'running', 'attempt': 1, 'cancel_requested': True}}" in out
    for task in ("count", "polite", "sleeper"):
        assert f"  cancel.{task} {{'status': 'cancelled', 'attempt': 1, 'reason': 'cancelled'}}" in out
    assert "  cancel.stubborn {'status': 'cancelled', 'attempt': 1, 'reason': 'cancel_grace'}" in out
    recorded = re.fullmatch(r"stubborn: (\d+) logs recorded within the grace, none after", out[-1])
    assert recorded is not None
    assert 3 <= int(recorded.group(1)) <= 12  # one every 0.1 s during the 1 s grace


def test_questions(tmp_path: Path) -> None:
    out = lines_of(run_example("questions.py", tmp_path))
    assert out[0] == "quick: ran while the other job was waiting"
    # The task's own prints interleave with the watcher's in no fixed order: check them apart.
    said = [line for line in out[1:-1] if line.startswith("attempt ")]
    assert said == ["attempt 1: the answer is 'yes'", "attempt 2: the answer is 'yes'"]
    watched = [line for line in out[1:-1] if not line.startswith("attempt ")]
    assert watched == [
        "status queued 0",
        "status running 1",
        "status waiting 1 ask",
        "prompt {'key': 'q1', 'message': 'Publish 12 documents?', 'options': ['yes', 'no']}",
        "refused: the answer must be one of ['yes', 'no'], not 'maybe'",
        "answer {'key': 'q1', 'value': 'yes'}",
        "status running 1",
        "status queued 1 retry",  # attempt 2 gets the stored answer to q1 at once: no prompt
        "status running 2",
        "status waiting 2 ask",
        "prompt {'key': 'reviewer', 'message': 'Who reviewed them?'}",
        "answer {'key': 'reviewer', 'value': 'Ada'}",
        "status running 2",
        "status waiting 2 ask",
        "prompt {'key': 'q3', 'message': 'Notify subscribers?', 'options': [True, False]}",
        "status running 2 ask_timeout",
        "status succeeded 2",
    ]
    assert out[-1] == (
        "succeeded {'published': True, 'reviewer': 'Ada', 'notify': False} {'q1': 'yes', 'reviewer': 'Ada'}"
    )


def test_sync_app(tmp_path: Path) -> None:
    out = lines_of(run_example("sync_app.py", tmp_path))
    assert out[0] == "submitted thumbnails queued"
    assert out[1] == "asks: {'key': 'q1', 'message': 'Upload the thumbnails?', 'options': ['yes', 'no']}"
    assert out[2].startswith(
        "succeeded {'photos': 20, 'uploaded': True} {'current': 20, 'total': 20, 'percent': 100.0,"
    )
    assert out[3] == "['succeeded']"


def test_events(tmp_path: Path) -> None:
    out = lines_of(run_example("events.py", tmp_path))
    assert re.fullmatch(
        r'\{"seq":1,"job_id":"[0-9a-z]{26}","type":"status",'
        r'"at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","data":\{"status":"queued","attempt":0\}\}',
        out[0],
    )
    assert [line.split(",")[0] for line in out[:4]] == ['{"seq":1', '{"seq":2', '{"seq":3', '{"seq":4']
    resumed = re.fullmatch(r"resumed after 4 with \[(.*)\]", out[4])
    assert resumed is not None
    seqs = [int(n) for n in resumed.group(1).split(", ")]
    # From the store there is no gap; live progress events may be coalesced, so only the order
    # and both ends are certain.
    assert seqs[0] == 5
    assert seqs == sorted(set(seqs))
    assert out[5] == f"succeeded 5 sections last_seq {seqs[-1]}"


def test_handback(tmp_path: Path) -> None:
    out = lines_of(run_example("handback.py", tmp_path))
    first = re.fullmatch(r"queued attempt 1 of 2 checkpoint (\d+)", out[0])
    assert first is not None
    assert 0 < int(first.group(1)) < 30
    assert out[1] == (
        f"succeeded attempt 2 of 2: rendered 30 frames, the last {30 - int(first.group(1))} on attempt 2"
    )
    assert out[2:] == [
        "    queued 0",
        "    running 1",
        "    queued 1 worker_shutdown",
        "    running 2",
        "    succeeded 2",
    ]


@pytest.mark.slow
def test_crash(tmp_path: Path) -> None:
    out = lines_of(run_example("crash.py", tmp_path))
    killed = re.fullmatch(r"worker process killed at checkpoint (\d+)", out[0])
    assert killed is not None
    assert out[1] == f"succeeded {{'chunks': 20, 'resumed_at': {killed.group(1)}, 'attempt': 2}}"
    assert out[2] == "attempt 2 of 2 · crashes 1 of 2"
    assert out[3:] == [
        "    queued 0",
        "    running 1",
        "    queued 1 lease_expired",
        "    running 2",
        "    succeeded 2",
    ]


@pytest.mark.slow
def test_processes(tmp_path: Path) -> None:
    out = lines_of(run_example("processes.py", tmp_path))
    assert out[0] == "jobs run by the two worker processes: True"
    assert re.fullmatch(r"processes used: [12]", out[1])
    assert out[2] == "every job watched to its end: True"


@pytest.mark.slow
def test_client(tmp_path: Path) -> None:
    out = lines_of(run_example("client.py", tmp_path))
    assert out[0] == "submitted queued"
    events = [line for line in out if re.match(r"\d+ ", line)]
    assert [int(line.split()[0]) for line in events] == list(range(1, len(events) + 1))
    assert "7 prompt {'key': 'q1', 'message': 'Email the report?', 'options': ['yes', 'no']}" in events
    assert "8 answer {'key': 'q1', 'value': 'yes'}" in events
    assert events[-1].endswith(
        "{'status': 'succeeded', 'attempt': 1, 'result': {'pages': 3, 'emailed': True}}"
    )
    assert out[len(events) + 1 :] == [
        "result {'pages': 3, 'emailed': True}",
        "refused: no job with id 'no-such-job'",
        "listed True",
        "cancelled 2",
        "ended cancelled",
        "ended cancelled",
    ]


def test_mount(tmp_path: Path) -> None:
    out = lines_of(run_example("mount.py", tmp_path))
    assert out[0] == "submitted queued"
    assert out[1:4] == ["seq 1 status queued", "seq 2 status running", out[3]]
    assert re.fullmatch(r"seq \d+ status succeeded", out[3])
    assert out[4] == "end succeeded"
    assert out[5].startswith("error shape: {'error': {'code': 'job_not_found'")


def test_dashboard_mounted_in_a_host_app(tmp_path: Path) -> None:
    out = lines_of(run_example("dashboard.py", tmp_path))
    assert out == [
        "ada submitted a job owned by ada",
        "the job's page: 200 text/html; charset=utf-8",
        "its policy allows scripts from: 'self'",
        "it finds the API at: True",
    ]


def test_host_login(tmp_path: Path) -> None:
    out = lines_of(run_example("host_login.py", tmp_path))
    assert out == [
        "ada submitted a job: 201 owner ada",
        "grace submitted a job: 201 owner grace",
        "ada lists the jobs of ['ada']",
        "grace lists the jobs of ['grace']",
        "ada reads grace's job: 404 job_not_found",
        "without a login: 401 unauthenticated",
        "ada's page watches with a token: queued running succeeded",
        "a token for grace's job, asked by ada: 404",
        "an admin key, beside the login, lists ['ada', 'grace']",
        "and with ?owner=grace ['grace']",
    ]


def test_cli_tasks_module(tmp_path: Path) -> None:
    """cli_tasks.py is a module for ``--app``: running it does nothing."""
    assert run_example("cli_tasks.py", tmp_path) == ""


@pytest.mark.slow
def test_cli_walkthrough(tmp_path: Path) -> None:
    """The shell session of docs/cli.md, run as it is written."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- walkthrough -->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert match is not None, "docs/cli.md has a walkthrough block"
    shutil.copy(EXAMPLES / "cli_tasks.py", tmp_path / "cli_tasks.py")
    done = subprocess.run(
        ["bash", "-e", "-c", match.group(1)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out}\n{done.stderr}"
    assert "applied 0001_initial.sql" in out
    assert re.search(r"result\s+hello, Ada", out)
    assert re.search(r"^[0-9a-z]{26} running$", out, re.MULTILINE)  # the answer resumed the job
    assert 'succeeded {"version": "1.4.2", "deployed": true}' in out
    assert re.search(r"^[0-9a-z]{26} cancelled$", out, re.MULTILINE)
    assert re.search(r"^[0-9a-z]{26} queued$", out, re.MULTILINE)  # retried
    assert "cancelled 1 jobs" in out
    assert '"reason": "retry"' in out


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, re.DOTALL)


def is_slice_of(block: list[str], lines: list[str]) -> bool:
    n = len(block)
    return any(lines[i : i + n] == block for i in range(len(lines) - n + 1))


@pytest.mark.parametrize("doc", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_doc_snippets_are_example_lines(doc: Path) -> None:
    """Each ```python block of the docs is a run of consecutive lines of one example file."""
    sources = {path.name: path.read_text(encoding="utf-8").splitlines() for path in EXAMPLES.glob("*.py")}
    for block in python_blocks(doc.read_text(encoding="utf-8")):
        lines = block.rstrip("\n").splitlines()
        found = [name for name, source in sources.items() if is_slice_of(lines, source)]
        assert found, f"{doc.name}: this snippet is not taken from any file in examples/:\n{block}"


WEB_LANGUAGES = {"html": ".html", "js": ".js", "jsx": ".jsx"}


@pytest.mark.parametrize("doc", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_doc_web_snippets_are_example_lines(doc: Path) -> None:
    """Each ```html, ```js or ```jsx block of the docs is a run of lines of one file of that kind
    under examples/ (the browser tests and the JavaScript tests run those files)."""
    markdown = doc.read_text(encoding="utf-8")
    for language, suffix in WEB_LANGUAGES.items():
        sources = {p.name: p.read_text(encoding="utf-8").splitlines() for p in EXAMPLES.rglob(f"*{suffix}")}
        for block in re.findall(rf"```{language}\n(.*?)```", markdown, re.DOTALL):
            lines = block.rstrip("\n").splitlines()
            found = [name for name, source in sources.items() if is_slice_of(lines, source)]
            assert found, f"{doc.name}: this {language} snippet is in no file of examples/:\n{block}"


def test_every_example_is_tested() -> None:
    tested = set(re.findall(r'run_example\("(\w+\.py)"', Path(__file__).read_text(encoding="utf-8")))
    assert tested == {path.name for path in EXAMPLES.glob("*.py")}


@pytest.mark.slow
def test_postgres(tmp_path: Path, postgres_url: str) -> None:
    out = lines_of(run_example("postgres.py", tmp_path, {"DATABASE_URL": postgres_url}))
    assert out == [f"img{n}.jpg succeeded img{n}.jpg.thumb.jpg" for n in range(6)]


@pytest.mark.slow
def test_limits(tmp_path: Path) -> None:
    out = lines_of(run_example("limits.py", tmp_path))
    assert out == [
        "one job for one key: True",
        "pages of one site at once, at most: 2",
        "mail queue while paused: queued",
        "after resume: receipt for order 7",
        "API calls started in any one second, at most: 5",
    ]


@pytest.mark.slow
def test_batches(tmp_path: Path) -> None:
    out = lines_of(run_example("batches.py", tmp_path))
    assert out == [
        "submitted 20 items: queued",
        "partial {'succeeded': 18, 'failed': 2}",  # img0.jpg and img10.jpg fail on attempt 1
        "retried 2",
        "completed {'succeeded': 20}",
        "20 rows; img0.jpg succeeded 2 img0.jpg.320.jpg",
    ]
    with (tmp_path / "thumbnails.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["args.photo"] for row in rows] == [f"img{n}.jpg" for n in range(20)]
    assert {row["status"] for row in rows} == {"succeeded"}
    assert [row["attempt"] for row in rows if row["attempt"] != "1"] == ["2", "2"]
