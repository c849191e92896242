"""The job value, its statuses, the transition table and job ids (pure)."""

from __future__ import annotations

import itertools
import types

import pytest

from underway import jobs
from underway.jobs import ACTIVE, TERMINAL, TRANSITIONS, Job, Status, can_transition, new_job_id, sources_of

Q, R, W, S, F, C = (
    Status.QUEUED,
    Status.RUNNING,
    Status.WAITING,
    Status.SUCCEEDED,
    Status.FAILED,
    Status.CANCELLED,
)

#: The whole table of DESIGN §1, written out independently of ``jobs.TRANSITIONS``.
LEGAL = {
    (Q, R), (Q, C),
    (R, S), (R, F), (R, Q), (R, W), (R, C),
    (W, R), (W, Q), (W, F), (W, C),
    (S, Q), (F, Q), (C, Q),
}  # fmt: skip

ALL_PAIRS = list(itertools.product(Status, Status))


@pytest.mark.parametrize(("source", "target"), ALL_PAIRS, ids=lambda s: s.value)
def test_every_pair_is_legal_exactly_when_the_design_says(source: Status, target: Status) -> None:
    assert can_transition(source, target) is ((source, target) in LEGAL)


def test_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_no_status_moves_to_itself() -> None:
    assert not any(can_transition(s, s) for s in Status)


@pytest.mark.parametrize("target", list(Status), ids=str)
def test_sources_of_is_the_inverse_of_the_table(target: Status) -> None:
    assert sources_of(target) == frozenset(s for s, t in LEGAL if t == target)


def test_sources_of_examples() -> None:
    assert sources_of(Status.RUNNING) == {Q, W}
    assert sources_of(Status.QUEUED) == {R, W, S, F, C}
    assert sources_of(Status.SUCCEEDED) == {R}
    assert sources_of(Status.CANCELLED) == {Q, R, W}


def test_terminal_statuses() -> None:
    assert {s for s in Status if s.terminal} == {S, F, C}
    assert {S, F, C} == TERMINAL
    assert {R, W} == ACTIVE


def test_terminal_statuses_only_lead_to_a_manual_retry() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == {Q}


def test_status_values_are_the_lowercase_words() -> None:
    assert [s.value for s in Status] == ["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
    assert str(Status.RUNNING) == "running"
    assert Status("waiting") is Status.WAITING
    assert Status.QUEUED == "queued"


# -- job ids -----------------------------------------------------------------------------------

CROCKFORD = set("0123456789abcdefghjkmnpqrstvwxyz")


def test_job_id_shape() -> None:
    job_id = new_job_id()
    assert len(job_id) == 26
    assert set(job_id) <= CROCKFORD
    assert not set(job_id) & set("ilou")


def test_job_ids_strictly_increase_over_many_calls() -> None:
    ids = [new_job_id() for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert all(len(i) == 26 and set(i) <= CROCKFORD for i in ids)


def _fake_clock(monkeypatch: pytest.MonkeyPatch, ns: list[int]) -> None:
    """Make ``new_job_id`` read ``ns[0]``; the real clock and id state come back after the test."""
    monkeypatch.setattr(jobs, "_id_last", jobs._id_last)
    monkeypatch.setattr(jobs, "time", types.SimpleNamespace(time_ns=lambda: ns[0]))


def test_job_ids_strictly_increase_within_one_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [4_102_444_800_000 * 1_000_000]  # 2100-01-01, later than any id made so far
    _fake_clock(monkeypatch, clock)
    ids = [new_job_id() for _ in range(1000)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    # The time part (first 10 characters, 48 bits + 2 spare) is the same millisecond for all.
    assert len({i[:9] for i in ids}) == 1


def test_job_ids_keep_increasing_when_the_clock_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [4_102_444_900_000 * 1_000_000]
    _fake_clock(monkeypatch, clock)
    first = new_job_id()
    clock[0] -= 5_000 * 1_000_000
    second = new_job_id()
    clock[0] += 10_000 * 1_000_000
    third = new_job_id()
    assert first < second < third


def test_job_id_encodes_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = 4_102_445_000_000
    _fake_clock(monkeypatch, [millis * 1_000_000 + 999_999])
    job_id = new_job_id()
    value = 0
    for char in job_id:
        value = value * 32 + "0123456789abcdefghjkmnpqrstvwxyz".index(char)
    assert value >> 80 == millis


# -- the job value -----------------------------------------------------------------------------


def make_job(**changes: object) -> Job:
    values: dict[str, object] = {
        "id": "01hx0000000000000000000000",
        "queue": "default",
        "task": "resize",
        "args": {"width": 100},
        "status": Status.QUEUED,
        "run_at": 1700000000.0,
        "created_at": 1700000000.0,
        "updated_at": 1700000000.25,
    }
    values.update(changes)
    return Job(**values)  # type: ignore[arg-type]


def test_to_dict_shape_of_a_new_job() -> None:
    assert make_job().to_dict() == {
        "id": "01hx0000000000000000000000",
        "queue": "default",
        "task": "resize",
        "args": {"width": 100},
        "status": "queued",
        "priority": 0,
        "run_at": "2023-11-14T22:13:20.000Z",
        "attempt": 0,
        "max_attempts": 1,
        "crashes": 0,
        "crash_retries": 2,
        "timeout": None,
        "lease_until": None,
        "worker_id": None,
        "owner": None,
        "labels": {},
        "progress": None,
        "prompt": None,
        "answers": {},
        "checkpoint": None,
        "result": None,
        "error": None,
        "cancel_requested": False,
        "created_at": "2023-11-14T22:13:20.000Z",
        "updated_at": "2023-11-14T22:13:20.250Z",
        "started_at": None,
        "finished_at": None,
        "last_seq": 0,
        "batch_id": None,
        "limit_key": None,
        "idempotency_key": None,
    }


def test_to_dict_of_a_finished_job() -> None:
    job = make_job(
        status=Status.SUCCEEDED,
        attempt=2,
        max_attempts=3,
        result={"ok": True},
        started_at=1700000001.5,
        finished_at=1700000002.125,
        labels={"env": "prod"},
        last_seq=7,
    )
    data = job.to_dict()
    assert data["status"] == "succeeded"
    assert data["result"] == {"ok": True}
    assert data["started_at"] == "2023-11-14T22:13:21.500Z"
    assert data["finished_at"] == "2023-11-14T22:13:22.125Z"
    assert data["labels"] == {"env": "prod"}
    assert (data["attempt"], data["max_attempts"], data["last_seq"]) == (2, 3, 7)
    assert job.terminal
    assert not make_job(status=Status.WAITING).terminal


def test_a_job_shows_its_attempts_and_its_crashes() -> None:
    job = make_job(status=Status.RUNNING, attempt=2, max_attempts=3, crashes=1, crash_retries=2)
    assert job.attempts_summary == "attempt 2 of 3 · crashes 1 of 2"
    data = job.to_dict()
    assert (data["crashes"], data["crash_retries"]) == (1, 2)
    assert Job.from_dict(data) == job


def test_a_job_from_an_older_server_has_no_crashes() -> None:
    data = make_job().to_dict()
    del data["crashes"], data["crash_retries"]
    assert (Job.from_dict(data).crashes, Job.from_dict(data).crash_retries) == (0, 2)


def test_job_is_frozen() -> None:
    job = make_job()
    with pytest.raises(AttributeError):
        job.status = Status.RUNNING  # type: ignore[misc]
