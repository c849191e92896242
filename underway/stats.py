"""Time series for a dashboard's charts (``GET /stats``): the buckets of a window, and the answer
assembled from what the store counted in them.

The store counts the jobs that finished in each bucket and picks their latency percentiles in
SQL (:meth:`underway.store.Store.finished_stats`); this module chooses the buckets, fills the
empty ones with zeros and nulls, and shapes the answer. Percentiles are *nearest-rank*: of the
``n`` latencies of a bucket, sorted, the ``ceil(p * n)``-th (:func:`nearest_rank`), a latency
that one of the jobs really had, the same on every store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import parse_duration
from .exceptions import ConfigError, InvalidArguments
from .timefmt import to_iso

#: The window when none is asked for, and the longest one allowed (seconds).
DEFAULT_WINDOW = 3600.0
MAX_WINDOW = 7 * 86400.0
#: About how many buckets a window is cut into.
BUCKETS = 60
#: The latency percentiles of each bucket, by name.
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
FINISHED = ("succeeded", "failed", "cancelled")
DEPTH = ("queued", "running", "waiting")


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedBucket:
    """The jobs that finished in one bucket of a window: how many ended in each final status,
    and the nearest-rank percentiles of their latency (submit to finish, in seconds)."""

    index: int  #: the bucket's position in the window, from 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    p50: float
    p90: float
    p99: float

    def count(self, status: str) -> int:
        counts = {"succeeded": self.succeeded, "failed": self.failed, "cancelled": self.cancelled}
        return counts[status]

    def latency(self, name: str) -> float:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99}[name]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsWindow:
    """``count`` buckets of ``bucket`` seconds from ``start``: whole multiples of ``bucket``
    since the epoch (so that the buckets stay put between refreshes), the last one holding
    ``now``."""

    window: float
    bucket: int
    start: float
    count: int
    now: float

    @property
    def end(self) -> float:
        """Where the last bucket ends (after ``now``, which it holds)."""
        return self.start + self.count * self.bucket

    def starts(self) -> list[float]:
        return [self.start + index * self.bucket for index in range(self.count)]


def parse_window(text: str) -> float:
    """``"3600"``, ``"15m"``, ``"1h"``, ``"7d"`` → seconds; ``InvalidArguments`` if it is not a
    duration or not in (0, 7 days]."""
    try:
        window = parse_duration(text.strip())
    except ConfigError:
        raise InvalidArguments(
            f"window {text!r} is not a duration: write seconds, or a number with s, m, h or d (1h)",
            details={"window": text},
        ) from None
    return checked_window(window)


def checked_window(window: float) -> float:
    if not 0 < window <= MAX_WINDOW:
        raise InvalidArguments(
            f"window {window:g} s is out of range: ask for more than 0 s and at most 7 days (7d)",
            details={"window": window, "limit": MAX_WINDOW},
        )
    return window


def stats_window(window: float, now: float) -> StatsWindow:
    """The buckets of the ``window`` seconds up to ``now``: ``window / 60`` seconds each,
    rounded to a whole second (at least one)."""
    checked_window(window)
    bucket = max(1, round(window / BUCKETS))
    count = math.ceil(window / bucket)
    last = math.floor(now / bucket) * bucket
    return StatsWindow(window=window, bucket=bucket, start=last - (count - 1) * bucket, count=count, now=now)


def nearest_rank(values: Sequence[float], p: float) -> float | None:
    """The ``ceil(p * n)``-th smallest of ``values`` (``0 < p <= 1``); ``None`` if there are none.
    The definition both stores compute in SQL."""
    if not values:
        return None
    return sorted(values)[max(1, math.ceil(p * len(values))) - 1]


def stats_answer(
    window: StatsWindow, rows: Sequence[FinishedBucket], depth: Mapping[str, int]
) -> dict[str, Any]:
    """The answer of ``GET /stats``: a value (zero, or null for a percentile) in every bucket,
    and the current ``depth`` by status."""
    found = {row.index: row for row in rows if 0 <= row.index < window.count}
    slots = [found.get(index) for index in range(window.count)]
    return {
        "window_s": window.window,
        "bucket_s": window.bucket,
        "from": to_iso(window.start),
        "to": to_iso(window.now),
        "buckets": [to_iso(start) for start in window.starts()],
        "finished": {status: [0 if s is None else s.count(status) for s in slots] for status in FINISHED},
        "latency": {name: [None if s is None else s.latency(name) for s in slots] for name in PERCENTILES},
        "depth": {status: depth.get(status, 0) for status in DEPTH},
    }


__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "FinishedBucket",
    "StatsWindow",
    "nearest_rank",
    "parse_window",
    "stats_answer",
    "stats_window",
]
