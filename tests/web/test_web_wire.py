"""The shared wire forms of events (``underway/web/wire.py``): encoded once, never mixed up."""

from __future__ import annotations

import json

from underway.events import Event, EventType
from underway.web import wire


def event(seq: int = 1, message: str = "hi", job_id: str = "j1") -> Event:
    data = {"level": "info", "message": message}
    return Event(job_id=job_id, seq=seq, type=EventType.LOG, at=1.5, data=data)


def test_forms_match_the_event() -> None:
    e = event(message="two\nlines")
    forms = wire.encoded(e)
    assert json.loads(forms.json) == e.to_dict()
    assert forms.sse == f"id: 1\nevent: log\ndata: {forms.json}\n\n".encode()
    assert forms.sse_without_id == f"event: log\ndata: {forms.json}\n\n".encode()


def test_one_encoding_shared_by_every_subscriber() -> None:
    e = event(seq=2)
    assert wire.encoded(e) is wire.encoded(e)
    assert wire.encoded(e).sse is wire.encoded(e).sse
    # The same event read again from the store (an equal object) shares it too.
    assert wire.encoded(event(seq=2)) is wire.encoded(e)


def test_a_different_event_with_the_same_key_is_not_mixed_up() -> None:
    first = wire.encoded(event(seq=3, message="from one store"))
    second = wire.encoded(event(seq=3, message="from another"))
    assert first is not second
    assert json.loads(second.json)["data"]["message"] == "from another"


def test_bounded() -> None:
    for seq in range(wire.CACHE_SIZE + 100):
        wire.encoded(event(seq=seq, job_id="bounded"))
    assert len(wire._cache) <= wire.CACHE_SIZE
