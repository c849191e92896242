"""Event types and their encoding (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from underway.events import (
    LOG_LEVELS,
    Event,
    EventType,
    NewEvent,
    answer_event,
    dumps,
    error_info,
    log_event,
    prompt_event,
    status_event,
)
from underway.jobs import Status


def make_event(type: EventType = EventType.STATUS, **data: object) -> Event:
    return Event(job_id="j1", seq=3, type=type, at=1700000000.5, data=dict(data))


def test_to_dict_shape() -> None:
    event = make_event(EventType.LOG, level="info", message="hi")
    assert event.to_dict() == {
        "seq": 3,
        "job_id": "j1",
        "type": "log",
        "at": "2023-11-14T22:13:20.500Z",
        "data": {"level": "info", "message": "hi"},
    }


def test_to_json_is_compact_and_keeps_unicode() -> None:
    event = make_event(EventType.LOG, level="info", message="café ✓")
    text = event.to_json()
    assert json.loads(text) == event.to_dict()
    assert ", " not in text
    assert ": " not in text
    assert "café ✓" in text


def test_dumps_falls_back_to_pydantic_for_other_values() -> None:
    @dataclass
    class Point:
        x: int
        y: int

    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert json.loads(dumps({"p": Point(1, 2), "at": moment, "s": {1}})) == {
        "p": {"x": 1, "y": 2},
        "at": "2024-01-02T03:04:05Z",
        "s": [1],
    }


def test_dumps_refuses_what_cannot_be_json() -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps({"x": object()})


def test_event_type_values() -> None:
    assert [t.value for t in EventType] == ["status", "progress", "log", "prompt", "answer"]
    assert str(EventType.PROGRESS) == "progress"


# -- status events -------------------------------------------------------------------------------


def test_status_event_minimal() -> None:
    event = status_event(Status.QUEUED, 0)
    assert event == NewEvent(EventType.STATUS, {"status": "queued", "attempt": 0})


def test_status_event_succeeded_always_carries_its_result() -> None:
    assert status_event(Status.SUCCEEDED, 1).data == {"status": "succeeded", "attempt": 1, "result": None}
    assert status_event(Status.SUCCEEDED, 2, result=[1, 2]).data["result"] == [1, 2]


def test_status_event_result_only_for_succeeded() -> None:
    assert "result" not in status_event(Status.FAILED, 1, result="x").data


def test_status_event_optional_fields() -> None:
    error = {"type": "ValueError", "message": "bad"}
    data = status_event(
        Status.QUEUED,
        2,
        error=error,
        cancel_requested=True,
        run_at=1700000000.0,
        reason="retry",
    ).data
    assert data == {
        "status": "queued",
        "attempt": 2,
        "error": error,
        "cancel_requested": True,
        "run_at": "2023-11-14T22:13:20.000Z",
        "reason": "retry",
    }


def test_status_event_leaves_out_false_cancel_requested() -> None:
    assert "cancel_requested" not in status_event(Status.RUNNING, 1).data


@pytest.mark.parametrize("status", list(Status), ids=str)
def test_event_status_and_ends_job(status: Status) -> None:
    new = status_event(status, 1)
    event = Event(job_id="j", seq=1, type=new.type, at=0.0, data=new.data)
    assert event.status is status
    assert event.ends_job is status.terminal


@pytest.mark.parametrize("type_", [t for t in EventType if t is not EventType.STATUS], ids=str)
def test_other_events_have_no_status(type_: EventType) -> None:
    event = make_event(type_, status="succeeded")
    assert event.status is None
    assert not event.ends_job


# -- log, prompt, answer ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_log_event_levels(level: str) -> None:
    assert log_event(level, "m") == NewEvent(EventType.LOG, {"level": level, "message": "m"})


def test_log_levels() -> None:
    assert LOG_LEVELS == ("debug", "info", "warning", "error")


@pytest.mark.parametrize("level", ["INFO", "warn", "critical", "", "fatal"])
def test_log_event_rejects_other_levels(level: str) -> None:
    with pytest.raises(ValueError, match="log level must be one of debug, info, warning, error"):
        log_event(level, "m")


def test_log_event_fields_only_when_given() -> None:
    assert log_event("info", "m", {"n": 1}).data == {"level": "info", "message": "m", "fields": {"n": 1}}
    assert "fields" not in log_event("info", "m", {}).data


def test_prompt_and_answer_events() -> None:
    prompt = {"key": "k", "message": "Continue?", "options": ["yes", "no"]}
    assert prompt_event(prompt) == NewEvent(EventType.PROMPT, prompt)
    assert answer_event("k", "yes") == NewEvent(EventType.ANSWER, {"key": "k", "value": "yes"})


# -- errors --------------------------------------------------------------------------------------


def _raise_and_catch() -> ValueError:
    try:
        raise ValueError("the width must be positive")
    except ValueError as exc:
        return exc


def test_error_info_with_traceback() -> None:
    info = error_info(_raise_and_catch())
    assert info["type"] == "ValueError"
    assert info["message"] == "the width must be positive"
    assert info["traceback"].startswith("Traceback (most recent call last):")
    assert "_raise_and_catch" in info["traceback"]
    assert info["traceback"].endswith("ValueError: the width must be positive")


def test_error_info_without_traceback() -> None:
    assert error_info(_raise_and_catch(), with_traceback=False) == {
        "type": "ValueError",
        "message": "the width must be positive",
    }


def test_error_info_of_an_exception_never_raised() -> None:
    assert error_info(KeyError("k")) == {"type": "KeyError", "message": "'k'"}


def test_error_info_is_json() -> None:
    info = error_info(_raise_and_catch())
    assert json.loads(dumps(info)) == info
