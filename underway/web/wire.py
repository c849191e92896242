"""The wire forms of events (JSON text, SSE frames), encoded once per process.

The bus hands the same :class:`~underway.events.Event` to every subscriber, and 10,000 open
streams would otherwise encode it 10,000 times. A small cache keyed by ``(job_id, seq)`` keeps
the encodings of recent events; an entry is used only for the same event (the same object, or
an equal one read again from the store), so two stores with clashing ids cannot mix.
"""

from __future__ import annotations

import threading

from ..events import Event
from .sse import frame

#: Recent events kept encoded: far more than the events a burst fans out at once.
CACHE_SIZE = 4096


class Encoded:
    """One event's wire forms, each computed on first use."""

    __slots__ = ("_sse", "_sse_without_id", "event", "json")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.json = event.to_json()
        self._sse: bytes | None = None
        self._sse_without_id: bytes | None = None

    @property
    def sse(self) -> bytes:
        """``id: <seq>``, ``event: <type>``, ``data: <json>`` (a per-job stream)."""
        if self._sse is None:
            self._sse = frame(self.json, event=self.event.type.value, id=str(self.event.seq))
        return self._sse

    @property
    def sse_without_id(self) -> bytes:
        """``event: <type>``, ``data: <json>`` (a multiplexed stream: no resume point)."""
        if self._sse_without_id is None:
            self._sse_without_id = frame(self.json, event=self.event.type.value)
        return self._sse_without_id


_cache: dict[tuple[str, int], Encoded] = {}
_lock = threading.Lock()  # servers may run in several threads (tests do)


def encoded(event: Event) -> Encoded:
    """The wire forms of ``event``, shared by every subscriber in this process."""
    key = (event.job_id, event.seq)
    hit = _cache.get(key)
    if hit is not None and (hit.event is event or hit.event == event):
        return hit
    fresh = Encoded(event)
    with _lock:
        _cache[key] = fresh
        while len(_cache) > CACHE_SIZE:
            del _cache[next(iter(_cache))]
    return fresh
