"""Limits per user, counted in one server process: open streams, and submissions per minute.

Only principals with the ``user`` role are limited: admins (trusted backends, benchmarks) and
requests made with authentication off are not. Streams count SSE streams, long polls and
WebSocket subscriptions alike. Submissions refill at an even rate (a token bucket), so a user may
submit a burst of a minute's worth at once, then one every ``60 / per_minute`` seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .auth import Principal
from .exceptions import TooManyRequests

#: Owners whose buckets are full are forgotten once more than this many are tracked.
TRACKED_OWNERS = 10_000


class Quotas:
    """The counters of one server process."""

    __slots__ = ("_buckets", "_per_minute", "_streams", "max_streams")

    def __init__(self, *, max_streams: int, per_minute: int) -> None:
        self.max_streams = max_streams
        self._per_minute = per_minute
        self._streams: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # owner → (tokens, at)

    def open_stream(self, principal: Principal) -> Callable[[], None]:
        """Count a stream of ``principal``; call what it returns (once) when the stream ends.
        ``TooManyRequests`` when the user already has ``max_streams`` open."""
        if principal.is_admin:
            return _nothing
        owner = principal.owner
        open_now = self._streams.get(owner, 0)
        if open_now >= self.max_streams:
            raise TooManyRequests(
                f"you have {open_now} streams open, the most allowed: close some (one multiplexed"
                " /stream or one WebSocket can follow many jobs)",
                retry_after=1.0,
                details={"limit": self.max_streams},
            )
        self._streams[owner] = open_now + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._streams.get(owner, 1) - 1
                if left > 0:
                    self._streams[owner] = left
                else:
                    self._streams.pop(owner, None)

        return release

    def streams_of(self, owner: str) -> int:
        return self._streams.get(owner, 0)

    def submission(self, principal: Principal, now: float | None = None) -> None:
        """Count one submission of ``principal``; ``TooManyRequests`` if it has none left."""
        if principal.is_admin:
            return
        now = time.monotonic() if now is None else now
        capacity = float(self._per_minute)
        rate = capacity / 60.0
        tokens, at = self._buckets.get(principal.owner, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / rate)
            raise TooManyRequests(
                f"you submitted more than {self._per_minute} jobs in a minute: wait {wait} s",
                retry_after=wait,
                details={"limit_per_minute": self._per_minute},
            )
        self._buckets[principal.owner] = (tokens - 1.0, now)
        if len(self._buckets) > TRACKED_OWNERS:
            self._forget_full(now, capacity, rate)

    def _forget_full(self, now: float, capacity: float, rate: float) -> None:
        full = [
            owner for owner, (tokens, at) in self._buckets.items() if tokens + (now - at) * rate >= capacity
        ]
        for owner in full:
            del self._buckets[owner]


def _nothing() -> None:
    return None
