"""The ``underway`` command line, run as users run it: one process per command, on a real
SQLite file, with worker subprocesses where a job has to run."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from e2e_support import APP, Cli, Probe, Processes, assert_contiguous, wait_until

import underway
from underway.store import sql

pytestmark = pytest.mark.timeout(60)

JOB_KEYS = set(
    underway.Job(
        id="x",
        queue="q",
        task="t",
        args={},
        status=underway.Status.QUEUED,
        run_at=0,
        created_at=0,
        updated_at=0,
    ).to_dict()
)


def submit(underway_cli: Cli, task: str, args: dict[str, Any] | None = None, *flags: str) -> dict[str, Any]:
    out = underway_cli.ok("submit", task, "--args", json.dumps(args or {}), "--json", *flags)
    job: dict[str, Any] = json.loads(out)
    return job


def status_of(probe: Probe, job_id: str) -> str:
    return probe.job(job_id).status.value


# -- the store ---------------------------------------------------------------------------------


def test_migrate_applies_the_schema_once(underway: Cli) -> None:
    names = [migration.name for migration in sql.migrations("sqlite")]
    assert names[0] == "0001_initial.sql"
    assert underway.ok("migrate", app=False).strip() == f"applied {', '.join(names)}"
    assert underway.ok("migrate", app=False).strip() == "the schema is up to date"


# -- submitting --------------------------------------------------------------------------------


def test_submit_json_prints_the_stored_job(underway: Cli, probe: Probe) -> None:
    printed = submit(underway, "greet", {"name": "ada"}, "--queue", "people", "--priority", "3")

    assert set(printed) == JOB_KEYS
    assert printed == probe.job(printed["id"]).to_dict()
    assert printed["args"] == {"name": "ada", "times": 1}  # defaults filled in
    assert (printed["task"], printed["queue"], printed["priority"]) == ("greet", "people", 3)
    assert (printed["status"], printed["attempt"], printed["last_seq"]) == ("queued", 0, 1)


def test_submit_prints_only_the_id_without_json(underway: Cli, probe: Probe) -> None:
    job_id = underway.ok("submit", "greet", "--args", '{"name": "ada"}').strip()
    assert probe.job(job_id).task == "greet"


@pytest.mark.parametrize(
    ("args", "message"),
    [("{name", "not JSON"), ("[1, 2]", "must be a JSON object"), ('"ada"', "must be a JSON object")],
)
def test_submit_refuses_args_that_are_not_a_json_object(
    underway: Cli, probe: Probe, args: str, message: str
) -> None:
    done = underway("submit", "greet", "--args", args)
    assert done.returncode != 0
    assert "--args" in done.stderr, done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert probe.jobs() == []


@pytest.mark.parametrize(
    "args", [{"name": 5}, {"name": "ada", "times": "2"}, {}, {"name": "ada", "extra": 1}]
)
def test_submit_refuses_invalid_task_arguments(underway: Cli, probe: Probe, args: dict[str, Any]) -> None:
    done = underway("submit", "greet", "--args", json.dumps(args))
    assert done.returncode == 1
    assert "invalid arguments for task 'greet'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert probe.jobs() == []


def test_submit_of_an_unknown_task_names_the_known_ones(underway: Cli) -> None:
    done = underway("submit", "gret", columns=None)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, "an error is one line, also when stderr is no terminal"
    assert "no task named 'gret'" in done.stderr, done.stderr
    assert "greet" in done.stderr, done.stderr


# -- reading -----------------------------------------------------------------------------------


def test_jobs_lists_newest_first_and_filters_by_status(underway: Cli, probe: Probe) -> None:
    first, second, third = (probe.submit("greet", {"name": name}).id for name in ("a", "b", "c"))
    probe.cancel(second)

    listed = json.loads(underway.ok("jobs", "--json", app=False))["jobs"]
    assert listed == [probe.job(job_id).to_dict() for job_id in (third, second, first)]
    assert all(set(job) == JOB_KEYS for job in listed)
    assert [job["status"] for job in listed] == ["queued", "cancelled", "queued"]

    queued = json.loads(underway.ok("jobs", "--status", "queued", "--json", app=False))["jobs"]
    assert [job["id"] for job in queued] == [third, first]
    table = underway.ok("jobs", "--status", "queued", app=False)
    assert first in table
    assert third in table
    assert second not in table


def test_jobs_refuses_an_unknown_status(underway: Cli) -> None:
    done = underway("jobs", "--status", "done", app=False)
    assert done.returncode == 2
    assert "'done' is not one of" in done.stderr, done.stderr


def test_show_lists_a_finished_job_with_its_events(underway: Cli, procs: Processes, probe: Probe) -> None:
    job = submit(underway, "confirm", {"question": "Ship it?"})
    worker = procs.worker("worker")
    wait_until(lambda: status_of(probe, job["id"]) == "waiting", 20, "the question", alive=[worker])
    underway.ok("answer", job["id"], "yes")
    wait_until(lambda: probe.job(job["id"]).terminal, 20, "the job to end", alive=[worker])

    shown = json.loads(underway.ok("show", job["id"], "--events", "--json", app=False))
    events = shown.pop("events")
    assert shown == probe.job(job["id"]).to_dict()
    assert [e["seq"] for e in events] == list(range(1, shown["last_seq"] + 1))
    assert all(e["job_id"] == job["id"] for e in events)
    types = [e["type"] for e in events]
    assert types[0] == "status"
    assert "prompt" in types
    assert "answer" in types
    assert "progress" in types
    assert events[-1]["data"] == {"status": "succeeded", "attempt": 1, "result": {"answer": "yes"}}

    watched = underway("watch", job["id"], app=False)  # an ended job: its story, then exit
    assert watched.returncode == 0, watched.stderr
    assert 'succeeded {"answer": "yes"}' in watched.stdout

    human = underway.ok("show", job["id"], "--events", app=False)
    assert job["id"] in human
    assert "Ship it?" in human
    assert "succeeded" in human


# -- changing ----------------------------------------------------------------------------------


def test_cancel_one_job_and_all_of_a_queue(underway: Cli, probe: Probe) -> None:
    one = probe.submit("greet", {"name": "a"}).id
    in_q = [probe.submit("greet", {"name": n}, queue="q").id for n in ("b", "c")]
    other = probe.submit("greet", {"name": "d"}, queue="other").id

    assert underway.ok("cancel", one, app=False).split() == [one, "cancelled"]
    assert underway.ok("cancel", "--all", "--queue", "q", app=False).strip() == "cancelled 2 jobs"
    assert json.loads(underway.ok("cancel", "--all", "--queue", "q", "--json", app=False)) == {"cancelled": 0}

    assert [status_of(probe, job_id) for job_id in (one, *in_q)] == ["cancelled"] * 3
    assert status_of(probe, other) == "queued"
    again = underway("cancel", one, app=False)
    assert again.returncode == 1, again.stderr
    assert "already ended" in again.stderr, again.stderr


def test_cancel_needs_jobs_or_all(underway: Cli) -> None:
    done = underway("cancel", app=False)
    assert done.returncode == 2
    assert "--all" in done.stderr, done.stderr


def test_cancel_asks_a_running_job_to_stop(underway: Cli, procs: Processes, probe: Probe) -> None:
    job = submit(underway, "sleep_for", {"seconds": 30})
    worker = procs.worker("worker")
    wait_until(lambda: probe.job(job["id"]).progress is not None, 20, "the job to start", alive=[worker])

    assert underway.ok("cancel", job["id"], app=False).split() == [job["id"], "cancelling"]
    ended = wait_until(
        lambda: (j := probe.job(job["id"])).terminal and j, 20, "the job to stop", alive=[worker]
    )
    assert ended.status.value == "cancelled"
    assert_contiguous(ended, probe.events(job["id"]))


def test_cancel_stops_a_job_waiting_for_an_answer(underway: Cli, procs: Processes, probe: Probe) -> None:
    job = submit(underway, "confirm")
    worker = procs.worker("worker")
    wait_until(lambda: status_of(probe, job["id"]) == "waiting", 20, "the question", alive=[worker])

    assert underway.ok("cancel", job["id"], app=False).split() == [job["id"], "cancelling"]
    ended = wait_until(
        lambda: (j := probe.job(job["id"])).terminal and j, 20, "the job to stop", alive=[worker]
    )
    assert (ended.status.value, ended.prompt) == ("cancelled", None)
    assert_contiguous(ended, probe.events(job["id"]))


@pytest.mark.slow
def test_answer_resumes_a_waiting_job(underway: Cli, procs: Processes, probe: Probe) -> None:
    job = submit(underway, "confirm")
    worker = procs.worker("worker")
    waiting = wait_until(
        lambda: (j := probe.job(job["id"])).status.value == "waiting" and j,
        20,
        "the question",
        alive=[worker],
    )
    assert waiting.prompt == {"key": "q1", "message": "Proceed?", "options": ["yes", "no"]}

    wrong = underway("answer", job["id"], "maybe", app=False)
    assert wrong.returncode == 1, wrong.stderr
    assert "must be one of" in wrong.stderr, wrong.stderr
    assert underway.ok("answer", job["id"], "no", app=False).split() == [job["id"], "running"]

    done = wait_until(
        lambda: (j := probe.job(job["id"])).terminal and j, 20, "the job to end", alive=[worker]
    )
    assert (done.status.value, done.result, done.answers) == ("succeeded", {"answer": "no"}, {"q1": "no"})
    late = underway("answer", job["id"], "yes", app=False)
    assert late.returncode == 1, late.stderr
    assert "not waiting for an answer" in late.stderr, late.stderr


def test_retry_runs_a_failed_job_again(underway: Cli, procs: Processes, probe: Probe) -> None:
    job = submit(underway, "fail_first")
    assert procs.worker("worker-1", "--burst").wait(30) == 0
    failed = probe.job(job["id"])
    assert failed.status.value == "failed"
    assert failed.error is not None
    assert failed.error["type"] == "RuntimeError"

    retried = json.loads(underway.ok("retry", job["id"], "--json"))
    assert (retried["id"], retried["status"], retried["error"]) == (job["id"], "queued", None)
    assert procs.worker("worker-2", "--burst").wait(30) == 0

    done = probe.job(job["id"])
    assert (done.status.value, done.attempt, done.result) == ("succeeded", 2, {"attempt": 2})
    assert_contiguous(done, probe.events(job["id"]))


def test_retry_refuses_an_unfinished_job(underway: Cli) -> None:
    job = submit(underway, "greet", {"name": "a"})
    done = underway("retry", job["id"])
    assert done.returncode == 1
    assert "only a finished job can be retried" in done.stderr, done.stderr


# -- following ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "args", "code", "shown"),
    [
        ("sleep_for", {"seconds": 0.3}, 0, "succeeded 0.3"),
        ("always_fail", {}, 1, "failed this task always fails"),
    ],
)
def test_watch_follows_a_job_to_its_end(
    underway: Cli, procs: Processes, task: str, args: dict[str, Any], code: int, shown: str
) -> None:
    job = submit(underway, task, args)
    watcher = procs.start("watch", "--url", underway.url, "watch", job["id"])
    worker = procs.worker("worker", "--burst")
    assert worker.wait(30) == 0, worker.output()
    assert watcher.wait(30) == code, watcher.output()
    assert shown in watcher.stdout


def test_watch_follows_a_retried_job_to_its_new_end(
    underway: Cli, procs: Processes, probe: Probe, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    job_id = probe.submit("fail_then_hold", {"release": str(release)}).id
    assert procs.worker("worker-1", "--burst").wait(30) == 0
    underway.ok("retry", job_id)
    worker = procs.worker("worker-2")
    wait_until(lambda: probe.job(job_id).attempt == 2, 20, "attempt 2 to start", alive=[worker])

    watcher = procs.start("watch", "--url", underway.url, "watch", job_id)
    wait_until(
        lambda: watcher.popen.poll() is not None or "attempt 2 waits" in watcher.stdout,
        20,
        "the watcher to show attempt 2 (or to give up)",
    )
    release.touch()
    assert watcher.wait(30) == 0, watcher.output()
    assert 'succeeded {"attempt": 2}' in watcher.stdout


def test_submit_watch_exits_when_the_job_ends(underway: Cli, procs: Processes, probe: Probe) -> None:
    procs.worker("worker")
    done = underway("submit", "sleep_for", "--args", '{"seconds": 0.2}', "--watch")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    assert status_of(probe, job_id) == "succeeded"
    assert "succeeded 0.2" in done.stdout

    failing = underway("submit", "always_fail", "--watch")
    assert failing.returncode == 1, failing.stderr
    assert "failed" in failing.stdout


# -- workers -----------------------------------------------------------------------------------


def test_a_burst_worker_drains_the_queue_then_exits(underway: Cli, procs: Processes, probe: Probe) -> None:
    assert procs.worker("idle", "--burst").wait(20) == 0
    ids = [probe.submit("greet", {"name": str(n)}).id for n in range(5)]
    worker = procs.worker("busy", "--burst")
    assert worker.wait(20) == 0, worker.output()
    assert [status_of(probe, job_id) for job_id in ids] == ["succeeded"] * 5
    assert worker.stderr == ""


def test_a_worker_serves_its_queues_and_reads_its_app_from_the_environment(
    procs: Processes, probe: Probe
) -> None:
    in_a, in_b = (probe.submit("greet", {"name": q}, queue=q).id for q in ("a", "b"))
    worker = procs.start("worker", "worker", "--burst", "--queues", "a", env={"UNDERWAY_APP": APP})
    assert worker.wait(20) == 0, worker.output()
    assert (status_of(probe, in_a), status_of(probe, in_b)) == ("succeeded", "queued")


def test_a_job_past_its_timeout_fails(underway: Cli, procs: Processes, probe: Probe) -> None:
    procs.worker("worker")
    done = underway("submit", "sleep_for", "--args", '{"seconds": 20}', "--timeout", "0.3", "--watch")
    assert done.returncode == 1, done.stderr
    assert "longer than its timeout of 0.3 s" in done.stdout
    failed = probe.job(done.stdout.split()[0])
    assert failed.status.value == "failed"
    assert failed.error is not None
    assert failed.error["type"] == "Timeout"


def test_a_worker_stops_on_sigint(procs: Processes, probe: Probe) -> None:
    worker = procs.worker("worker")
    wait_until(probe.workers, 20, "the worker to show up in the store", alive=[worker])
    worker.send(signal.SIGINT)
    assert worker.wait(20) == 0, worker.output()


def test_worker_without_an_app_says_how_to_name_it(underway: Cli) -> None:
    done = underway("worker", "--burst", app=False)
    assert done.returncode == 1
    assert "--app module:attribute" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("e2e_tasks", "write module:attribute"),
        ("no_such_module:app", "cannot import"),
        ("e2e_tasks:nope", "is not an underway.App"),
    ],
)
def test_worker_with_a_wrong_app_says_what_is_wrong(underway: Cli, app: str, message: str) -> None:
    done = underway("--app", app, "worker", "--burst", app=False)
    assert done.returncode == 1
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize(
    "command",
    [("show",), ("watch",), ("cancel",), ("retry",), ("answer", "MISSING", "yes")],
    ids=lambda c: c[0],
)
def test_an_unknown_job_id_is_an_error(underway: Cli, command: tuple[str, ...]) -> None:
    args = command if "MISSING" in command else (*command, "MISSING")
    done = underway(*args, app=False)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "no job with id 'MISSING'" in done.stderr, done.stderr
