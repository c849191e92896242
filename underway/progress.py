"""Progress: the value a task reports, its coalescing, percent, rate and ETA (pure).

A task may call ``ctx.progress()`` millions of times; only a few of those calls are written.
:class:`Throttle` decides when: the first change is written at once (leading edge), then at
most one write per ``interval``, and the last value is always written in the end (the caller
keeps it pending until :meth:`Throttle.due` says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Time constant of the rate's moving average: older speeds fade with this half-life-ish.
RATE_TAU = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    current: float
    total: float | None = None
    message: str | None = None
    step: int | None = None
    steps: int | None = None

    @property
    def percent(self) -> float | None:
        if not self.total or self.total <= 0:
            return None
        return round(min(100.0, max(0.0, 100.0 * self.current / self.total)), 1)

    def to_data(self, *, rate: float | None = None) -> dict[str, Any]:
        """The data of a ``progress`` event; ``rate`` in units per second."""
        data: dict[str, Any] = {"current": _number(self.current)}
        if self.total is not None:
            data["total"] = _number(self.total)
            data["percent"] = self.percent
        for name in ("message", "step", "steps"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if rate is not None and rate > 0:
            data["rate"] = round(rate, 3)
            eta = eta_seconds(self, rate)
            if eta is not None:
                data["eta_s"] = eta
        return data


def eta_seconds(progress: Progress, rate: float) -> float | None:
    if progress.total is None or rate <= 0:
        return None
    remaining = max(0.0, progress.total - progress.current)
    return round(remaining / rate, 1)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


class RateMeter:
    """Units per second as an exponentially weighted moving average of observed speeds.

    Weights decay with elapsed time (not with sample count), so uneven write intervals do
    not skew it. A step backwards (a new stage starting from 0) restarts the measurement.
    """

    __slots__ = ("_last_time", "_last_value", "rate")

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_value = 0.0
        self.rate: float | None = None

    def observe(self, at: float, value: float) -> float | None:
        if self._last_time is None or value < self._last_value:
            self._last_time, self._last_value, self.rate = at, value, None
            return None
        elapsed = at - self._last_time
        if elapsed <= 0:
            return self.rate
        speed = (value - self._last_value) / elapsed
        if self.rate is None:
            self.rate = speed
        else:
            weight = 1.0 - math.exp(-elapsed / RATE_TAU)
            self.rate += weight * (speed - self.rate)
        self._last_time, self._last_value = at, value
        return self.rate


class Throttle:
    """At most one write per ``interval``; the first one at once.

    ``due(now)`` is the time at which a pending change may be written (``<= now``: write it
    now); ``wrote(now)`` records a write.
    """

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -math.inf

    def due(self) -> float:
        return self._last + self.interval

    def wrote(self, now: float) -> None:
        self._last = now
