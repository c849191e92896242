"""Timestamps: float seconds inside, ISO 8601 UTC on the wire (pure)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from underway.timefmt import from_iso, now, to_iso


def test_now_is_the_wall_clock() -> None:
    before = time.time()
    value = now()
    assert before <= value <= time.time()


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (1700000000.5, "2023-11-14T22:13:20.500Z"),
        (1700000000.0, "2023-11-14T22:13:20.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1700000000.1239, "2023-11-14T22:13:20.123Z"),  # milliseconds, truncated
        (1700000000.9999, "2023-11-14T22:13:20.999Z"),
    ],
)
def test_to_iso(ts: float, text: str) -> None:
    assert to_iso(ts) == text


def test_to_iso_none() -> None:
    assert to_iso(None) is None


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("2023-11-14T22:13:20.500Z", 1700000000.5),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T22:13:20", 1700000000.0),  # no zone: UTC
        ("2023-11-14T22:13:20+00:00", 1700000000.0),
        ("2023-11-14T23:13:20+01:00", 1700000000.0),
        ("2023-11-14T17:13:20.250-05:00", 1700000000.25),
        ("2023-11-14", 1699920000.0),
    ],
)
def test_from_iso(text: str, ts: float) -> None:
    assert from_iso(text) == pytest.approx(ts, abs=1e-6)


@pytest.mark.parametrize("text", ["", "yesterday", "2023-13-01T00:00:00Z", "1700000000"])
def test_from_iso_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        from_iso(text)


@given(st.floats(min_value=0.0, max_value=4_102_444_800.0))
def test_round_trip_to_the_millisecond(ts: float) -> None:
    text = to_iso(ts)
    assert text is not None
    assert text.endswith("Z")
    assert len(text) == 24
    back = from_iso(text)
    assert ts - 0.001 <= back <= ts + 1e-6
    assert to_iso(back) == text
